"""``python -m vl_datasets import-fewshot``: CoOp/MaPLe few-shot pickles become our JSON cache.

The pickles here are written the way those repositories write them: Dassl's
Datum objects sampled by Dassl's ``generate_fewshot_dataset`` on the seeded
global stream, dumped with ``pickle.HIGHEST_PROTOCOL``, with absolute paths
of "their" dataset folder, which is then moved to where "we" keep it.
"""
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
from dataset_files import png, write_pets

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum

import vl_datasets
from vl_datasets.__main__ import main

REPO = Path(__file__).resolve().parents[1]
PETS_YAML = str(REPO / "configs" / "datasets" / "oxford_pets.yaml")
IMAGENET_YAML = str(REPO / "configs" / "datasets" / "imagenet.yaml")


def write_imagenet(root: Path) -> Path:
    ds = root / "imagenet"
    ds.mkdir(parents=True)
    (ds / "classnames.txt").write_text("n001 tench\nn002 goldfish\nn003 great white shark\n")
    for wnid in ("n001", "n002", "n003"):
        for i in range(6):
            png(ds / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        png(ds / "images" / "val" / wnid / f"val_{wnid}.JPEG")
    return ds


def dassl_pickle(path: Path, data: dict) -> None:
    """As CoOp's datasets save split_fewshot/shot_K-seed_S.pkl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)


def build(root, name, shots, seed):
    """The dataset as train.py builds it (Dassl's train.py seeds the global stream first)."""
    cfg = get_cfg_default()
    vl_datasets.add_dataset_config(cfg)
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = str(root), name, shots, seed
    random.seed(seed)
    return DATASET_REGISTRY.get(name)(cfg)


def records(items, root=None):
    """(path relative to ``root`` if given, label, class name) of each Datum."""
    return [(os.path.relpath(d.impath, root) if root else d.impath, d.label, d.classname) for d in items]


def test_a_pickle_written_by_dassl_imports_to_the_same_samples(tmp_path):
    theirs_root, ours_root = tmp_path / "home" / "them" / "data", tmp_path / "ours"
    theirs = write_pets(theirs_root)
    # Their run: Dassl's Datum over their absolute paths, sampled as CoOp samples after seeding with 3.
    split = json.loads((theirs / "split_zhou_OxfordPets.json").read_text())
    lists = {key: [Datum(impath=str(theirs / "images" / rel), label=y, classname=c) for rel, y, c in split[key]]
             for key in ("train", "val")}
    random.seed(3)
    sampler = DatasetBase(train_x=lists["train"])  # the dataset object whose method CoOp calls
    data = {"train": sampler.generate_fewshot_dataset(lists["train"], num_shots=4),
            "val": sampler.generate_fewshot_dataset(lists["val"], num_shots=4)}
    pkl = theirs / "split_fewshot" / "shot_4-seed_3.pkl"
    dassl_pickle(pkl, data)
    ours_root.mkdir()
    shutil.move(str(theirs), str(ours_root / "oxford_pets"))  # the dataset now lives elsewhere
    pkl = ours_root / "oxford_pets" / "split_fewshot" / "shot_4-seed_3.pkl"

    assert main(["import-fewshot", str(pkl), "--root", str(ours_root), "--dataset-config-file", PETS_YAML]) == 0
    target = ours_root / "oxford_pets" / "split_fewshot" / "shot_4-seed_3.json"
    stored = json.loads(target.read_text())
    assert all(not os.path.isabs(p) for p, _, _ in stored["train"] + stored["val"])

    def monkey_sampling(*args, **kwargs):
        raise AssertionError("sampled instead of reading the imported sample")

    original, DatasetBase.generate_fewshot_dataset = DatasetBase.generate_fewshot_dataset, monkey_sampling
    try:
        ds = build(ours_root, "OxfordPets", shots=4, seed=3)
    finally:
        DatasetBase.generate_fewshot_dataset = original
    ours_dir = ours_root / "oxford_pets"
    assert records(ds.train_x, ours_dir) == records(data["train"], theirs)  # same images, order, labels
    assert records(ds.val, ours_dir) == records(data["val"], theirs)
    # Importing again is a no-op; another sample under the same name needs --force.
    assert main(["import-fewshot", str(pkl), "--root", str(ours_root), "--dataset-config-file", PETS_YAML]) == 0
    stored["train"] = stored["train"][1:]
    target.write_text(json.dumps(stored))
    assert main(["import-fewshot", str(pkl), "--root", str(ours_root), "--dataset-config-file", PETS_YAML]) == 2
    assert main(["import-fewshot", str(pkl), "--root", str(ours_root), "--dataset-config-file", PETS_YAML,
                 "--force"]) == 0
    assert json.loads(target.read_text())["train"] != stored["train"]


def test_imagenet_samples_drawn_from_another_file_order_come_back_exactly(tmp_path):
    """CoOp lists ImageNet's images in os.listdir order, we list them sorted: the same seed picks other
    images, unless their pickle is imported."""
    theirs = write_imagenet(tmp_path / "theirs")
    train = []
    for label, wnid in enumerate(("n001", "n002", "n003")):  # their folders sorted, their files not
        for name in sorted(os.listdir(theirs / "images" / "train" / wnid), reverse=True):
            train.append(Datum(impath=str(theirs / "images" / "train" / wnid / name), label=label,
                               classname=["tench", "goldfish", "great white shark"][label]))
    random.seed(2)
    their_sample = DatasetBase(train_x=train).generate_fewshot_dataset(train, num_shots=2)
    dassl_pickle(tmp_path / "shot_2-seed_2.pkl", {"train": their_sample})

    ours_root = tmp_path / "ours"
    ours_root.mkdir()
    shutil.copytree(theirs, ours_root / "imagenet")
    drawn_here = build(ours_root, "ImageNet", shots=2, seed=2)  # without the import: our own sample
    assert records(drawn_here.train_x, ours_root / "imagenet") != records(their_sample, theirs)
    shutil.rmtree(ours_root / "imagenet" / "split_fewshot")

    assert main(["import-fewshot", str(tmp_path / "shot_2-seed_2.pkl"), "--root", str(ours_root),
                 "--dataset-config-file", IMAGENET_YAML]) == 0
    imported = build(ours_root, "ImageNet", shots=2, seed=2)
    assert records(imported.train_x, ours_root / "imagenet") == records(their_sample, theirs)


class Payload:
    """Unpickling this would create ``path``: a stand-in for code a malicious pickle runs."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_carrying_another_class_is_refused_without_running_it(tmp_path, capsys):
    write_pets(tmp_path)
    marker = tmp_path / "payload_ran"
    pkl = tmp_path / "shot_1-seed_1.pkl"
    dassl_pickle(pkl, {"train": [Payload(str(marker))], "val": []})
    assert main(["import-fewshot", str(pkl), "--root", str(tmp_path), "--dataset-config-file", PETS_YAML]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "open, which" in err[0] and "not Dassl's Datum" in err[0] and str(pkl) in err[0]
    assert not (tmp_path / "oxford_pets" / "split_fewshot").exists()

    from collections import OrderedDict  # harmless, but not a plain container: refused too

    dassl_pickle(pkl, OrderedDict(train=[], val=[]))
    assert main(["import-fewshot", str(pkl), "--root", str(tmp_path), "--dataset-config-file", PETS_YAML]) == 2
    assert "collections.OrderedDict" in capsys.readouterr().err


def stranger_datum(impath, label, classname):
    """A Datum as another machine pickled it (Datum's __init__ would check that the image exists here)."""
    item = Datum.__new__(Datum)
    item.__dict__.update(_impath=impath, _label=label, _domain=0, _classname=classname)
    return item


def test_paths_labels_and_names_that_do_not_fit_are_one_line_errors(tmp_path, capsys):
    ours = write_pets(tmp_path / "ours")
    old = "/mnt/old/pets_dataset"  # not named oxford_pets: the folder cannot be found in the paths
    train = stranger_datum(f"{old}/images/abyssinian/train_0.png", 0, "abyssinian")
    val = stranger_datum(f"{old}/images/abyssinian/val_0.png", 0, "abyssinian")

    def error(data, *extra, name="shot_1-seed_1.pkl"):
        dassl_pickle(tmp_path / name, data)
        argv = ["import-fewshot", str(tmp_path / name), "--root", str(tmp_path / "ours"),
                "--dataset-config-file", PETS_YAML, *extra]
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "give that folder as it was with --from DIR" in error({"train": [train], "val": [val]})
    assert "are not under /mnt/elsewhere" in error({"train": [train], "val": [val]}, "--from", "/mnt/elsewhere")
    assert "is not in OxfordPets's val list" in error({"train": [train], "val": [train]}, "--from", old)
    relabelled = stranger_datum(train.impath, 2, "abyssinian")
    assert "label 2 ('abyssinian') there but 0 ('abyssinian') here" in error({"train": [relabelled], "val": [val]},
                                                                               "--from", old)
    assert "more than a 1-shot sample" in error({"train": [train, train], "val": [val]}, "--from", old)
    assert "has no 'val' list" in error({"train": [train]}, "--from", old)
    assert "give --shots K and --seed S" in error({"train": [train], "val": [val]}, "--from", old, name="few.pkl")
    assert not (ours / "split_fewshot").exists()
    # The same pickle with the folder given is fine.
    dassl_pickle(tmp_path / "shot_1-seed_1.pkl", {"train": [train], "val": [val]})
    assert main(["import-fewshot", str(tmp_path / "shot_1-seed_1.pkl"), "--root", str(tmp_path / "ours"),
                 "--dataset-config-file", PETS_YAML, "--from", old]) == 0
    assert (ours / "split_fewshot" / "shot_1-seed_1.json").is_file()
