"""The benchmark datasets read their on-disk layouts (vl_datasets/benchmarks.py, fgvc_aircraft.py,
imagenet.py): the split-file datasets, FGVCAircraft and the ImageNet family, and name what is missing.
Every dataset here is a handful of tiny PNGs written to tmp_path in the layout the real benchmark uses.
"""
import json
import random
from pathlib import Path

import pytest
from dataset_files import build, png, per_label, records, write_pets, write_split

from llamp.errors import MissingFileError


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


# ---------------------------------------------------------------- missing files


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
