"""Dataset classes: on-disk layouts, few-shot sampling and its cache, base/new, bad input.

Every dataset here is a handful of tiny PNGs written to tmp_path in the
layout the real benchmark uses.
"""
import dataclasses
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset

import vl_datasets
from llamp.errors import ConfigError, MissingFileError
from vl_datasets import synthetic

REPO = Path(__file__).resolve().parents[1]

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


# ---------------------------------------------------------------- registry, configs

EXPECTED = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "OxfordFlowers", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DescribableTextures",
    "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenetv2": "ImageNetV2",
    "imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR",
    "synthetic": "Synthetic", "synthetic_sketch": "SyntheticSketch",
}


def test_dataset_configs_name_registered_datasets():
    found = {}
    for path in sorted((REPO / "configs" / "datasets").glob("*.yaml")):
        cfg = get_cfg_default()
        vl_datasets.add_dataset_config(cfg)
        cfg.merge_from_file(str(path))
        found[path.stem] = cfg.DATASET.NAME
    assert found == EXPECTED
    assert set(EXPECTED.values()) <= set(DATASET_REGISTRY.registered_names())


def test_add_dataset_config_adds_subsample_key_without_clobbering():
    cfg = get_cfg_default()
    assert "SUBSAMPLE_CLASSES" not in cfg.DATASET
    vl_datasets.add_dataset_config(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    cfg.merge_from_list(["DATASET.SUBSAMPLE_CLASSES", "new"])
    vl_datasets.add_dataset_config(cfg)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "new"


# ---------------------------------------------------------------- split-file datasets

SPLIT_LAYOUTS = [
    ("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    ("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    ("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
    ("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    ("Food101", "food-101", "images", "split_zhou_Food101.json"),
    ("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    ("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json"),
    ("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
    ("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
]


@pytest.mark.parametrize("name, folder, image_folder, split_file", SPLIT_LAYOUTS)
def test_split_file_datasets_read_the_coop_layout(tmp_path, name, folder, image_folder, split_file):
    ds_dir = tmp_path / folder
    image_dir = ds_dir / image_folder if image_folder else ds_dir
    classes = {0: "Class With Spaces", 1: "b_class"}
    content = write_split(image_dir, ds_dir / split_file, {"train": 2, "val": 1, "test": 1}, classes)

    ds = build(tmp_path, name)
    for split, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        assert records(items) == [(str(image_dir / rel), label, cname) for rel, label, cname in content[split]]
    assert ds.classnames == ["Class With Spaces", "b_class"]


def test_base_new_follow_the_ecosystem_rule(tmp_path):
    # 5 classes with non-contiguous labels, listed out of order:
    # base = the 3 smallest labels, new = the 2 others, each renumbered from 0.
    classes = {40: "lynx", 10: "cat", 50: "zebra", 30: "horse", 20: "dog"}
    ds_dir = tmp_path / "oxford_pets"
    write_split(ds_dir / "images", ds_dir / "split_zhou_OxfordPets.json", {"train": 2, "val": 1, "test": 3}, classes)

    full = build(tmp_path, "OxfordPets", subsample="all")
    assert sorted({d.label for d in full.train_x}) == [10, 20, 30, 40, 50]

    base = build(tmp_path, "OxfordPets", subsample="base")
    new = build(tmp_path, "OxfordPets", subsample="new")
    assert base.classnames == ["cat", "dog", "horse"] and base.num_classes == 3
    assert new.classnames == ["lynx", "zebra"] and new.num_classes == 2

    for subset, old_labels in ((base, [10, 20, 30]), (new, [40, 50])):
        relabel = {old: i for i, old in enumerate(old_labels)}
        for split, full_items, per_class in (
            ("train", full.train_x, 2), ("val", full.val, 1), ("test", full.test, 3)
        ):
            items = getattr(subset, "train_x" if split == "train" else split)
            expected = [(p, relabel[y], c) for p, y, c in records(full_items) if y in relabel]
            assert records(items) == expected, split
            assert per_label(items) == {i: per_class for i in range(len(old_labels))}


def test_subsample_uses_train_labels_for_every_split():
    # A class that only val/test contain is in neither half.
    def datum(label):
        return Datum(impath=__file__, label=label, classname=f"c{label}")

    train = [datum(y) for y in (2, 0, 1)]  # ceil(3 / 2) = 2 base classes
    test = [datum(y) for y in (0, 1, 2, 7)]
    base_train, base_test = vl_datasets.subsample_classes(train, test, subsample="base")
    new_train, new_test = vl_datasets.subsample_classes(train, test, subsample="new")
    assert [(d.label, d.classname) for d in base_test] == [(0, "c0"), (1, "c1")]
    assert [(d.label, d.classname) for d in new_test] == [(0, "c2")]
    assert [(d.label, d.classname) for d in base_train] == [(0, "c0"), (1, "c1")]  # train order kept
    assert [(d.label, d.classname) for d in new_train] == [(0, "c2")]
    assert vl_datasets.subsample_classes(train, test, subsample="all") == [train, test]


# ---------------------------------------------------------------- few-shot


@pytest.mark.parametrize("shots, val_shots", [(2, 2), (5, 4)])
def test_few_shot_is_dassl_sampling_on_the_seeded_stream(tmp_path, shots, val_shots):
    ds_dir = write_pets(tmp_path)
    full = build(tmp_path, "OxfordPets")

    random.seed(7)  # what Dassl's train.py does with cfg.SEED before building the dataset
    ds = build(tmp_path, "OxfordPets", shots=shots, seed=7)

    random.seed(7)
    sampler = object.__new__(DatasetBase)
    exp_train = sampler.generate_fewshot_dataset(full.train_x, num_shots=shots)
    exp_val = sampler.generate_fewshot_dataset(full.val, num_shots=min(shots, 4))
    assert records(ds.train_x) == records(exp_train)
    assert records(ds.val) == records(exp_val)
    assert per_label(ds.train_x) == {0: shots, 1: shots, 2: shots}
    assert per_label(ds.val) == {0: val_shots, 1: val_shots, 2: val_shots}
    assert records(ds.test) == records(full.test)

    cache = ds_dir / "split_fewshot" / f"shot_{shots}-seed_7.json"
    stored = json.loads(cache.read_text())
    assert [(str(ds_dir / p), y, c) for p, y, c in stored["train"]] == records(exp_train)
    assert all(not os.path.isabs(p) for p, _, _ in stored["train"] + stored["val"])
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left


def test_few_shot_cache_is_reused(tmp_path, monkeypatch):
    write_pets(tmp_path)
    random.seed(3)
    first = build(tmp_path, "OxfordPets", shots=2, seed=3)

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again instead of reading the cache")

    monkeypatch.setattr(DatasetBase, "generate_fewshot_dataset", no_sampling)
    random.seed(12345)  # a different stream: only the cache can give the same images
    second = build(tmp_path, "OxfordPets", shots=2, seed=3)
    assert records(second.train_x) == records(first.train_x)
    assert records(second.val) == records(first.val)

    with pytest.raises(AssertionError, match="sampled again"):
        build(tmp_path, "OxfordPets", shots=2, seed=4)  # another seed is another cache file


def test_few_shot_then_base_new(tmp_path):
    write_pets(tmp_path)
    random.seed(1)
    ds = build(tmp_path, "OxfordPets", shots=3, subsample="new")
    assert ds.classnames == ["basset hound"]
    assert per_label(ds.train_x) == {0: 3} and per_label(ds.val) == {0: 3} and per_label(ds.test) == {0: 2}


# ---------------------------------------------------------------- FGVCAircraft, ImageNet family


def test_fgvc_aircraft_reads_variants_and_image_lists(tmp_path):
    ds_dir = tmp_path / "fgvc_aircraft"
    ds_dir.mkdir()
    (ds_dir / "variants.txt").write_text("Cessna 172\n707-320\nA300B4\n")
    lists = {
        "train": ["0001 A300B4", "0002 Cessna 172", "0003 707-320"],
        "val": ["0004 Cessna 172"],
        "test": ["0005 707-320", "0006 A300B4"],
    }
    for split, lines in lists.items():
        (ds_dir / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            png(ds_dir / "images" / f"{line.split()[0]}.jpg")

    ds = build(tmp_path, "FGVCAircraft")
    img = ds_dir / "images"
    assert records(ds.train_x) == [
        (str(img / "0001.jpg"), 2, "A300B4"),
        (str(img / "0002.jpg"), 0, "Cessna 172"),
        (str(img / "0003.jpg"), 1, "707-320"),
    ]
    assert records(ds.val) == [(str(img / "0004.jpg"), 0, "Cessna 172")]
    assert [d.label for d in ds.test] == [1, 2]
    assert ds.classnames == ["Cessna 172", "707-320", "A300B4"]


def write_imagenet(root):
    ds_dir = Path(root) / "imagenet"
    # classnames.txt is not in wnid order: labels must come from the sorted folders.
    (ds_dir).mkdir(parents=True)
    (ds_dir / "classnames.txt").write_text("n003 great white shark\nn001 tench\nn002 goldfish\n")
    for wnid in ("n002", "n003", "n001"):
        for i in range(4):
            png(ds_dir / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        png(ds_dir / "images" / "val" / wnid / f"val_{wnid}.JPEG")
    png(ds_dir / "images" / "train" / "n001" / ".hidden.JPEG")
    return ds_dir


def test_imagenet_reads_sorted_folders_and_caches_json(tmp_path):
    ds_dir = write_imagenet(tmp_path)
    ds = build(tmp_path, "ImageNet")
    assert ds.classnames == ["tench", "goldfish", "great white shark"]
    train = ds_dir / "images" / "train"
    assert records(ds.train_x)[:5] == [(str(train / "n001" / f"n001_{i}.JPEG"), 0, "tench") for i in range(4)] + [
        (str(train / "n002" / "n002_0.JPEG"), 1, "goldfish")
    ]
    assert len(ds.train_x) == 12  # the hidden file is skipped
    assert records(ds.val) == records(ds.test)
    assert [(d.label, d.classname) for d in ds.test] == [(0, "tench"), (1, "goldfish"), (2, "great white shark")]

    cache = ds_dir / "preprocessed.json"
    stored = json.loads(cache.read_text())
    assert stored["train"][0] == ["images/train/n001/n001_0.JPEG", 0, "tench"]
    # The second build reads the cache, not the folders.
    stored["test"][0][2] = "edited tench"
    cache.write_text(json.dumps(stored))
    assert build(tmp_path, "ImageNet").test[0].classname == "edited tench"


def test_imagenet_few_shot_samples_train_only(tmp_path):
    ds_dir = write_imagenet(tmp_path)
    random.seed(5)
    ds = build(tmp_path, "ImageNet", shots=2, seed=5)
    assert per_label(ds.train_x) == {0: 2, 1: 2, 2: 2}
    assert per_label(ds.test) == {0: 1, 1: 1, 2: 1} and records(ds.val) == records(ds.test)
    stored = json.loads((ds_dir / "split_fewshot" / "shot_2-seed_5.json").read_text())
    assert set(stored) == {"train"}


def test_imagenetv2_labels_follow_classnames_order(tmp_path):
    ds_dir = tmp_path / "imagenetv2"
    ds_dir.mkdir()
    (ds_dir / "classnames.txt").write_text("n009 zebra\nn001 tench\nn005 goldfish\n")
    image_dir = ds_dir / "imagenetv2-matched-frequency-format-val"
    for label in range(3):
        png(image_dir / str(label) / "a.jpeg")
    ds = build(tmp_path, "ImageNetV2", shots=4)  # test-only: NUM_SHOTS is ignored
    names = ["zebra", "tench", "goldfish"]  # line order, not wnid order
    assert records(ds.test) == [(str(image_dir / str(i) / "a.jpeg"), i, n) for i, n in enumerate(names)]
    assert records(ds.train_x) == records(ds.val) == records(ds.test)


@pytest.mark.parametrize(
    "name, folder, image_folder",
    [("ImageNetSketch", "imagenet-sketch", "images"), ("ImageNetA", "imagenet-adversarial", "imagenet-a"),
     ("ImageNetR", "imagenet-rendition", "imagenet-r")],
)
def test_wnid_folder_test_sets(tmp_path, name, folder, image_folder):
    ds_dir = tmp_path / folder
    ds_dir.mkdir()
    (ds_dir / "classnames.txt").write_text("n001 tench\nn002 goldfish\nn003 shark\nn004 eel\nn005 ray\n")
    for wnid in ("n004", "n002", "n005"):  # a subset of the classes, as in ImageNet-A/R
        png(ds_dir / image_folder / wnid / "x.png")
    (ds_dir / image_folder / "README.txt").write_text("not a class")

    ds = build(tmp_path, name, shots=1)
    assert [(d.label, d.classname) for d in ds.test] == [(0, "goldfish"), (1, "eel"), (2, "ray")]
    base = build(tmp_path, name, subsample="base")
    assert base.classnames == ["goldfish", "eel"]
    assert records(base.train_x) == records(base.val) == records(base.test)


# ---------------------------------------------------------------- synthetic


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthetic_write_is_deterministic_and_leaves_global_random_alone(tmp_path):
    random.seed(0)
    expected_next = random.random()
    random.seed(0)
    a = vl_datasets.write_synthetic_dataset(tmp_path / "a" / "synthetic")
    assert random.random() == expected_next  # the global stream was not consumed
    b = vl_datasets.write_synthetic_dataset(tmp_path / "b" / "synthetic")
    files_a = tree(a)
    assert files_a == tree(b)

    split = json.loads(files_a["split_synthetic.json"])
    assert {k: len(v) for k, v in split.items()} == {"train": 36 * 24, "val": 36 * 4, "test": 36 * 20}
    assert split["train"][0] == ["red_circle/0.jpg", 0, "red circle"]
    assert sorted({(y, c) for _, y, c in split["test"]}) == list(enumerate(vl_datasets.SYNTHETIC_CLASSNAMES))
    img = Image.open(a / "images" / "red_circle" / "0.jpg")
    assert img.size == (64, 64) and img.mode == "RGB"
    assert sum(len(data) for data in files_a.values()) < 5e6  # a few MB
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["synthetic"]  # no temp folder left


def test_synthetic_builds_through_dassl_with_few_shot_and_base(tmp_path):
    random.seed(1)
    ds = build_dataset(make_cfg(tmp_path, "Synthetic", shots=4, subsample="base"))
    assert ds.classnames == list(vl_datasets.SYNTHETIC_CLASSNAMES[:18])
    assert per_label(ds.train_x) == {i: 4 for i in range(18)}
    assert per_label(ds.val) == {i: 4 for i in range(18)}
    assert per_label(ds.test) == {i: 20 for i in range(18)}
    assert (tmp_path / "synthetic" / "split_fewshot" / "shot_4-seed_1.json").is_file()

    new = build_dataset(make_cfg(tmp_path, "Synthetic", subsample="new"))  # reuses the written folder
    assert new.classnames == list(vl_datasets.SYNTHETIC_CLASSNAMES[18:])
    assert len(new.train_x) == 18 * 24

    # Each half holds every colour and every shape, three times each; new classes are new combinations.
    from llamp.tiny.shapes import COLOURS as colours, SHAPES as shapes
    assert len(colours) == len(shapes) == 6
    for half in (ds.classnames, new.classnames):
        pairs = [tuple(c.split()) for c in half]
        assert sorted(c for c, _ in pairs) == sorted([c for c in colours for _ in range(3)])
        assert sorted(s for _, s in pairs) == sorted([s for s in shapes for _ in range(3)])
    assert not set(ds.classnames) & set(new.classnames)


def test_interrupted_synthetic_write_leaves_no_half_dataset(tmp_path):
    calls = []

    def dying_draw(*args):
        calls.append(1)
        if len(calls) == 50:
            raise KeyboardInterrupt  # a run killed part-way through the first write
        return synthetic.SYNTHETIC.draw(*args)

    with pytest.raises(KeyboardInterrupt):
        vl_datasets.write_synthetic_dataset(tmp_path / "synthetic", dataclasses.replace(synthetic.SYNTHETIC,
                                                                                         draw=dying_draw))
    assert list(tmp_path.iterdir()) == []

    ds = build(tmp_path, "Synthetic")
    assert len(ds.train_x) == 36 * 24


def test_the_sketch_style_draws_the_same_classes_otherwise(tmp_path):
    """SyntheticSketch: Synthetic's classes, base/new halves and sizes, in the other drawing style."""
    random.seed(1)
    sketch = build_dataset(make_cfg(tmp_path, "SyntheticSketch", shots=4, subsample="base"))
    assert sketch.classnames == list(vl_datasets.SYNTHETIC_CLASSNAMES[:18])
    assert per_label(sketch.test) == {i: 20 for i in range(18)}
    assert (tmp_path / "synthetic_sketch" / "split_synthetic_sketch.json").is_file()
    plain = build(tmp_path, "Synthetic")
    same = "images/red_circle/0.jpg"
    ours, theirs = (np.asarray(Image.open(tmp_path / folder / same), dtype=np.float32)
                    for folder in ("synthetic_sketch", "synthetic"))
    assert np.abs(ours - theirs).mean() > 20  # not the same drawing (pixel values 0..255)
    assert len(plain.train_x) == 36 * 24


def test_synthetic_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="split_synthetic.json"):
        build(tmp_path, "Synthetic")


# ---------------------------------------------------------------- bad input


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(MissingFileError) as err:
        build(tmp_path, "OxfordPets")
    assert str(tmp_path / "oxford_pets") in str(err.value)
    assert "DATASETS.md" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_missing_split_file_names_it(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(MissingFileError) as err:
        build(tmp_path, "OxfordPets")
    assert str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json") in str(err.value)
    assert "download split_zhou_OxfordPets.json" in str(err.value)


def test_missing_image_names_the_image_and_the_split_file(tmp_path):
    ds_dir = write_pets(tmp_path)
    victim = ds_dir / "images" / "abyssinian" / "test_1.png"
    victim.unlink()
    with pytest.raises(MissingFileError, match="split_zhou_OxfordPets.json") as err:
        build(tmp_path, "OxfordPets")
    assert str(victim) in str(err.value)


def test_missing_imagenet_classnames(tmp_path):
    (tmp_path / "imagenet" / "images" / "train").mkdir(parents=True)
    with pytest.raises(MissingFileError, match="classnames.txt"):
        build(tmp_path, "ImageNet")


@pytest.mark.parametrize("value", ["Base", "novel", ""])
def test_invalid_subsample_names_the_key(tmp_path, value):
    write_pets(tmp_path)
    with pytest.raises(ConfigError, match="DATASET.SUBSAMPLE_CLASSES"):
        build(tmp_path, "OxfordPets", subsample=value)


def test_corrupt_few_shot_cache_is_a_clear_error(tmp_path):
    ds_dir = write_pets(tmp_path)
    cache = ds_dir / "split_fewshot" / "shot_2-seed_1.json"
    cache.parent.mkdir()
    cache.write_text('{"train": [')
    with pytest.raises(ConfigError, match="shot_2-seed_1.json"):
        build(tmp_path, "OxfordPets", shots=2)


def test_empty_root_names_the_key():
    with pytest.raises(ConfigError, match="DATASET.ROOT"):
        build("", "Synthetic")


def test_few_shot_cache_with_empty_lists_is_a_clear_error(tmp_path):
    ds_dir = write_pets(tmp_path)
    cache = ds_dir / "split_fewshot" / "shot_2-seed_1.json"
    cache.parent.mkdir()
    cache.write_text('{"train": [], "val": []}')
    with pytest.raises(ConfigError, match=r"shot_2-seed_1.json has an empty train and val list"):
        build(tmp_path, "OxfordPets", shots=2)
