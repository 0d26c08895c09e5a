"""FGVC-Aircraft: the one benchmark without a split file.

Its own lists are used: ``variants.txt`` (one class name per line; the label
is the line's position) and ``images_variant_{train,val,test}.txt`` with
lines ``<image id> <class name, may contain spaces>`` for ``images/<id>.jpg``.
"""
from __future__ import annotations

import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from llamp.errors import ConfigError

from .common import VLDataset, make_datum, require_dir, require_file


@DATASET_REGISTRY.register()
class FGVCAircraft(VLDataset):
    """FGVC-Aircraft (100 variants)."""

    folder = "fgvc_aircraft"
    download = "FGVC-Aircraft (its data/ folder: images/, variants.txt, images_variant_*.txt)"

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        require_dir(self.dataset_dir, self.missing_hint())
        image_dir = require_dir(os.path.join(self.dataset_dir, "images"), self.missing_hint())
        variants = require_file(os.path.join(self.dataset_dir, "variants.txt"), self.missing_hint())
        with open(variants, encoding="utf-8") as f:
            classnames = [line.strip() for line in f if line.strip()]
        label_of = {name: label for label, name in enumerate(classnames)}
        splits = []
        for split in ("train", "val", "test"):
            listing = os.path.join(self.dataset_dir, f"images_variant_{split}.txt")
            require_file(listing, self.missing_hint())
            splits.append(_read_listing(listing, image_dir, label_of))
        return splits[0], splits[1], splits[2]


def _read_listing(listing: str, image_dir: str, label_of: dict[str, int]) -> list[Datum]:
    items = []
    with open(listing, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            imname, _, classname = line.strip().partition(" ")
            if classname not in label_of:
                raise ConfigError(f"{listing}:{line_no}: class {classname!r} is not in variants.txt")
            impath = os.path.join(image_dir, imname + ".jpg")
            items.append(make_datum(impath, label_of[classname], classname, listing))
    return items
