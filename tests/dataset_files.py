"""Datasets written to disk for the dataset tests: a handful of tiny PNGs in the layout the real benchmark
uses, and the dataset built from them through Dassl's config."""
import io
import json
from pathlib import Path

from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY

import vl_datasets

_buf = io.BytesIO()
Image.new("RGB", (8, 8), (120, 30, 200)).save(_buf, format="PNG")
PNG = _buf.getvalue()


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)


def make_cfg(root, name, shots=-1, subsample="all", seed=1):
    cfg = get_cfg_default()
    vl_datasets.add_dataset_config(cfg)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.VERBOSE = False
    return cfg


def build(root, name, **kw):
    return DATASET_REGISTRY.get(name)(make_cfg(root, name, **kw))


def write_split(image_dir: Path, split_path: Path, per_split: dict, classes: dict) -> dict:
    """Images ``<class>/<split>_<i>.png`` under image_dir and a CoOp split file; returns its content."""
    content = {}
    for split, count in per_split.items():
        content[split] = []
        for label, name in classes.items():
            for i in range(count):
                rel = f"{name.replace(' ', '_')}/{split}_{i}.png"
                png(image_dir / rel)
                content[split].append([rel, label, name])
    split_path.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text(json.dumps(content))
    return content


def records(items):
    return [(d.impath, d.label, d.classname) for d in items]


def per_label(items):
    counts = {}
    for d in items:
        counts[d.label] = counts.get(d.label, 0) + 1
    return counts


PETS = {0: "abyssinian", 1: "american bulldog", 2: "basset hound"}


def write_pets(root, per_split=None):
    ds = Path(root) / "oxford_pets"
    per_split = per_split or {"train": 8, "val": 6, "test": 2}
    write_split(ds / "images", ds / "split_zhou_OxfordPets.json", per_split, PETS)
    return ds
