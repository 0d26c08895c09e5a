"""The dataset package (vl_datasets/__init__.py, common.py): every dataset config names a registered
dataset; base/new; few-shot sampling and its cache; bad settings and caches. (The datasets' own layouts:
test_benchmarks.py and test_synthetic.py.)
"""
import json
import os
import random
from pathlib import Path

import pytest
from dataset_files import build, per_label, records, write_pets, write_split

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum

import vl_datasets
from llamp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------- base/new


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


# ---------------------------------------------------------------- bad settings and caches


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
