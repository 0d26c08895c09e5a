"""The drawn datasets (vl_datasets/synthetic.py): Synthetic is written deterministically and whole, builds
through Dassl with few-shot and base/new, and refuses a folder it did not write; SyntheticSketch draws the
same classes in another style.
"""
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
from dataset_files import build, make_cfg, per_label
from PIL import Image

from dassl.data.datasets import build_dataset

import vl_datasets
from llamp.errors import ConfigError
from vl_datasets import synthetic


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
