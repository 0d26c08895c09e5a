"""Small drawn datasets for tests and demos: coloured shapes, 36 classes, in two drawing styles.

``Synthetic`` (the demo's) and ``SyntheticSketch`` (the same classes drawn in
another style, which no config was tuned on) are written on first use to
``ROOT/synthetic`` and ``ROOT/synthetic_sketch`` in the same format as the real
benchmarks (``images/<class_folder>/<n>.jpg`` + a split file), so they then go
through exactly the same code: few-shot cache, base/new.

Classes are colour x shape ("red circle", "orange star", ...); the images and
the base/new order are llamp/tiny/shapes.py's: each half holds every
colour and every shape, so new classes are unseen combinations of seen
attributes. A model has to look to tell them apart: sizes, positions,
rotations, clutter and noise vary, and the light is tinted (every hue turned by
DATASET_HUE_SHIFT_DEGREES), unlike the tiny CLIP's pre-training drawings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dassl.data.datasets import DATASET_REGISTRY, Datum

from llamp.atomic_files import write_folder_atomic
from llamp.errors import ConfigError
from llamp.tiny.shapes import CLASSES as SYNTHETIC_CLASSES
from llamp.tiny.shapes import CLASSNAMES as SYNTHETIC_CLASSNAMES
from llamp.tiny.shapes import DATASET_HUE_SHIFT_DEGREES, draw_shape, draw_sketch, jpeg_bytes

from .common import SplitFileDataset, write_json_atomic

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_CLASSNAMES", "Synthetic", "SyntheticSketch", "write_synthetic_dataset"]

SPLIT_SIZES = (("train", 24), ("val", 4), ("test", 20))  # images per class
SPLIT_FILE = "split_synthetic.json"


@dataclass(frozen=True)
class DrawnDataset:
    """What tells the drawn datasets apart: how an image is drawn, the split file, the seed."""

    draw: Callable[[np.random.Generator, str, str], bytes]  # (rng, colour, shape) -> JPEG bytes
    split_file: str
    # Fixed: a dataset is the same everywhere, whatever cfg.SEED is. The tiny CLIP's pre-training
    # draws from other seeds (llamp/tiny/pretraining.py), so it never sees these images.
    seed: int


SYNTHETIC = DrawnDataset(
    draw=lambda rng, colour, shape: jpeg_bytes(draw_shape(rng, colour, shape, DATASET_HUE_SHIFT_DEGREES)[0]),
    split_file=SPLIT_FILE, seed=1234)
SYNTHETIC_SKETCH = DrawnDataset(draw=lambda rng, colour, shape: jpeg_bytes(draw_sketch(rng, colour, shape)[0]),
                                split_file="split_synthetic_sketch.json", seed=4321)


def _write_into(folder: Path, drawn: DrawnDataset) -> None:
    rng = np.random.default_rng(drawn.seed)  # own generator: the global streams stay untouched
    split: dict[str, list] = {name: [] for name, _ in SPLIT_SIZES}
    for label, (colour, shape) in enumerate(SYNTHETIC_CLASSES):
        class_folder = f"{colour}_{shape}"
        (folder / "images" / class_folder).mkdir(parents=True)
        n = 0
        for split_name, count in SPLIT_SIZES:
            for _ in range(count):
                (folder / "images" / class_folder / f"{n}.jpg").write_bytes(drawn.draw(rng, colour, shape))
                split[split_name].append([f"{class_folder}/{n}.jpg", label, f"{colour} {shape}"])
                n += 1
    write_json_atomic(str(folder / drawn.split_file), split)


def write_synthetic_dataset(dataset_dir: str | os.PathLike, drawn: DrawnDataset = SYNTHETIC) -> Path:
    """Write a drawn dataset to ``dataset_dir`` unless it is already there; return the folder.

    The content is the same on every call and machine. It is built in a temp
    folder beside ``dataset_dir`` and renamed into place, so an interrupted
    write never leaves a half dataset behind.
    """
    dataset_dir = Path(dataset_dir).expanduser().absolute()
    split_file = drawn.split_file
    if (dataset_dir / split_file).is_file():
        return dataset_dir
    if dataset_dir.exists() and any(dataset_dir.iterdir()):
        raise ConfigError(
            f"{dataset_dir} exists but has no {split_file}; "
            "delete the folder so that the synthetic dataset is written again"
        )
    try:
        write_folder_atomic(str(dataset_dir), lambda tmp: _write_into(Path(tmp), drawn), replace=False)
    except OSError:  # the rename: dataset_dir is no longer empty
        if not (dataset_dir / split_file).is_file():
            raise
        # another process finished writing it first: theirs is identical
    return dataset_dir


@DATASET_REGISTRY.register()
class Synthetic(SplitFileDataset):
    """36 colour-shape classes, 24 train / 4 val / 20 test 64x64 images each."""

    folder = "synthetic"
    image_folder = "images"
    split_file = SPLIT_FILE
    drawn = SYNTHETIC

    def missing_hint(self, what: str | None = None) -> str:
        return f"delete {self.dataset_dir} so that the {type(self).__name__} dataset is written again"

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        write_synthetic_dataset(self.dataset_dir, self.drawn)
        return super().read_data()


@DATASET_REGISTRY.register()
class SyntheticSketch(Synthetic):
    """Synthetic's classes in the second drawing style (llamp/tiny/shapes.py draw_sketch), same sizes."""

    folder = "synthetic_sketch"
    split_file = SYNTHETIC_SKETCH.split_file
    drawn = SYNTHETIC_SKETCH
