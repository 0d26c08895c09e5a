"""ImageNet and its test-only variants (V2, Sketch, A, R).

All read ``classnames.txt`` (lines ``<wnid> <class name>``) and class
folders. Folder lists are sorted, so labels do not depend on the filesystem:
for ImageNet, Sketch, A and R the label is the wnid's position among the
sorted class folders; ImageNetV2's folders are named 0..999 and follow the
line order of ``classnames.txt``.
"""
from __future__ import annotations

import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from llamp.errors import ConfigError

from .common import (
    VLDataset,
    list_dirs,
    list_files,
    make_datum,
    read_datum_lists,
    require_dir,
    require_file,
    write_datum_lists,
)


def read_classnames(path: str) -> dict[str, str]:
    """``classnames.txt`` as {wnid: class name}, in file order."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, name = line.strip().partition(" ")
            if wnid:
                names[wnid] = name
    return names


def read_class_folders(image_dir: str, folders: list[tuple[str, int, str]]) -> list[Datum]:
    """Datums for every visible file of each ``(folder, label, classname)``, in sorted order."""
    items = []
    for folder, label, classname in folders:
        class_dir = os.path.join(image_dir, folder)
        for name in list_files(class_dir):
            items.append(make_datum(os.path.join(class_dir, name), label, classname, class_dir))
    return items


def _classname(classnames: dict[str, str], wnid: str, path: str) -> str:
    if wnid not in classnames:
        raise ConfigError(f"class folder {wnid!r} has no line in {path}")
    return classnames[wnid]


@DATASET_REGISTRY.register()
class ImageNet(VLDataset):
    """ImageNet-1k: ``images/train/<wnid>/`` for training, ``images/val/<wnid>/`` as val and test.

    Few-shot sampling draws from train only. Reading 1.28M file names is
    slow, so the parsed lists are cached as ``preprocessed.json`` (paths
    relative to the dataset folder) and read from there afterwards.
    """

    folder = "imagenet"
    download = "ImageNet (images/train, images/val) and classnames.txt"
    fewshot_val = False  # val is the test set, never sampled

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        require_dir(self.dataset_dir, self.missing_hint())
        cache = os.path.join(self.dataset_dir, "preprocessed.json")
        if os.path.isfile(cache):
            lists = read_datum_lists(cache, self.dataset_dir, ("train", "test"))
            return lists["train"], lists["test"], lists["test"]

        names_file = require_file(os.path.join(self.dataset_dir, "classnames.txt"), self.missing_hint())
        classnames = read_classnames(names_file)
        train_dir = require_dir(os.path.join(self.dataset_dir, "images", "train"), self.missing_hint())
        val_dir = require_dir(os.path.join(self.dataset_dir, "images", "val"), self.missing_hint())

        # Labels come from the train folders; val folders are looked up in them
        # so a val folder missing or extra can never shift the labels.
        label_of = {wnid: label for label, wnid in enumerate(list_dirs(train_dir))}
        train = read_class_folders(
            train_dir, [(w, label, _classname(classnames, w, names_file)) for w, label in label_of.items()]
        )
        val_folders = []
        for wnid in list_dirs(val_dir):
            if wnid not in label_of:
                raise ConfigError(f"{os.path.join(val_dir, wnid)} has no matching folder in {train_dir}")
            val_folders.append((wnid, label_of[wnid], _classname(classnames, wnid, names_file)))
        test = read_class_folders(val_dir, val_folders)

        write_datum_lists(cache, {"train": train, "test": test}, self.dataset_dir)
        return train, test, test


class _TestOnly(VLDataset):
    """An evaluation-only dataset: train_x = val = test = all images.

    Used after training on ImageNet, so NUM_SHOTS does not apply; a
    SUBSAMPLE_CLASSES other than ``all`` is applied by the usual rule.
    """

    test_only = True

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        require_dir(self.dataset_dir, self.missing_hint())
        data = self.read_images()
        return data, data, data

    def read_images(self) -> list[Datum]:
        raise NotImplementedError


@DATASET_REGISTRY.register()
class ImageNetV2(_TestOnly):
    """ImageNetV2 matched-frequency: folder ``i`` holds class ``i`` of classnames.txt."""

    folder = "imagenetv2"
    image_folder = "imagenetv2-matched-frequency-format-val"
    download = "ImageNetV2 matched-frequency (imagenetv2-matched-frequency-format-val) and classnames.txt"

    def read_images(self) -> list[Datum]:
        names_file = require_file(os.path.join(self.dataset_dir, "classnames.txt"), self.missing_hint())
        classnames = list(read_classnames(names_file).values())
        image_dir = require_dir(os.path.join(self.dataset_dir, self.image_folder), self.missing_hint())
        for label in range(len(classnames)):
            require_dir(os.path.join(image_dir, str(label)), self.missing_hint())
        return read_class_folders(image_dir, [(str(i), i, name) for i, name in enumerate(classnames)])


class _WnidFolders(_TestOnly):
    """Images in ``<image_folder>/<wnid>/``; label = position among the sorted wnid folders."""

    image_folder = ""

    def read_images(self) -> list[Datum]:
        names_file = require_file(os.path.join(self.dataset_dir, "classnames.txt"), self.missing_hint())
        classnames = read_classnames(names_file)
        image_dir = require_dir(os.path.join(self.dataset_dir, self.image_folder), self.missing_hint())
        # list_dirs keeps folders only, which drops README.txt of ImageNet-A/R.
        folders = [
            (wnid, label, _classname(classnames, wnid, names_file))
            for label, wnid in enumerate(list_dirs(image_dir))
        ]
        return read_class_folders(image_dir, folders)


@DATASET_REGISTRY.register()
class ImageNetSketch(_WnidFolders):
    """ImageNet-Sketch (1000 classes)."""

    folder = "imagenet-sketch"
    image_folder = "images"
    download = "ImageNet-Sketch (images/<wnid>/) and classnames.txt"


@DATASET_REGISTRY.register()
class ImageNetA(_WnidFolders):
    """ImageNet-A, natural adversarial examples (200 classes)."""

    folder = "imagenet-adversarial"
    image_folder = "imagenet-a"
    download = "ImageNet-A (imagenet-a/<wnid>/) and classnames.txt"


@DATASET_REGISTRY.register()
class ImageNetR(_WnidFolders):
    """ImageNet-R, renditions (200 classes)."""

    folder = "imagenet-rendition"
    image_folder = "imagenet-r"
    download = "ImageNet-R (imagenet-r/<wnid>/) and classnames.txt"
