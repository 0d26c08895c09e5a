"""A small drawn dataset for tests and demos: coloured shapes, 12 classes.

Written on first use to ``ROOT/synthetic`` in the same format as the real
benchmarks (``images/<class_folder>/<n>.png`` + ``split_synthetic.json``),
so it then goes through exactly the same code: few-shot cache, base/new.

Classes are colour x shape ("red circle", "green square", ...), ordered so
that the base half and the new half each hold every colour and every shape:
new classes are unseen combinations of seen attributes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dassl.data.datasets import DATASET_REGISTRY, Datum

from llamp.errors import ConfigError

from .common import SplitFileDataset, write_json_atomic

COLOURS = {"red": (210, 50, 45), "green": (45, 165, 60), "blue": (50, 85, 215)}
SHAPES = ("circle", "square", "triangle", "cross")
# Label i is colour i mod 3 and shape i mod 4 (3 and 4 are coprime, so every
# pair appears once); the first 6 (base) then cover all colours and shapes.
SYNTHETIC_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (list(COLOURS)[i % len(COLOURS)], SHAPES[i % len(SHAPES)]) for i in range(len(COLOURS) * len(SHAPES))
)
SYNTHETIC_CLASSNAMES: tuple[str, ...] = tuple(f"{c} {s}" for c, s in SYNTHETIC_CLASSES)

SPLIT_SIZES = (("train", 24), ("val", 6), ("test", 10))  # images per class
IMAGE_SIZE = 64
SPLIT_FILE = "split_synthetic.json"
_SEED = 1234  # fixed: the dataset is the same everywhere, whatever cfg.SEED is


def _draw(rng: np.random.Generator, colour: str, shape: str) -> Image.Image:
    """One image: a jittered shape at a random place and size on a noisy background."""
    background = rng.integers(60, 190) + rng.integers(-15, 16, size=3)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(int(v) for v in np.clip(background, 0, 255)))
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.integers(-30, 31, size=3), 0, 255))

    r = int(rng.integers(9, 20))  # half extent of the shape
    cx, cy = (int(v) for v in rng.integers(r + 2, IMAGE_SIZE - r - 2, size=2))
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = int(r * 0.85)
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + int(0.8 * r)), (cx + r, cy + int(0.8 * r))], fill=fill)
    else:  # cross
        t = max(2, int(r * 0.3))
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)

    noise = rng.normal(0.0, 12.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels)


def _write_into(folder: Path) -> None:
    rng = np.random.default_rng(_SEED)  # own generator: the global streams stay untouched
    split: dict[str, list] = {name: [] for name, _ in SPLIT_SIZES}
    for label, (colour, shape) in enumerate(SYNTHETIC_CLASSES):
        class_folder = f"{colour}_{shape}"
        (folder / "images" / class_folder).mkdir(parents=True)
        n = 0
        for split_name, count in SPLIT_SIZES:
            for _ in range(count):
                _draw(rng, colour, shape).save(folder / "images" / class_folder / f"{n}.png", format="PNG")
                split[split_name].append([f"{class_folder}/{n}.png", label, f"{colour} {shape}"])
                n += 1
    write_json_atomic(str(folder / SPLIT_FILE), split)


def write_synthetic_dataset(dataset_dir: str | os.PathLike) -> Path:
    """Write the synthetic dataset to ``dataset_dir`` unless it is already there; return the folder.

    The content is the same on every call and machine. It is built in a temp
    folder beside ``dataset_dir`` and renamed into place, so an interrupted
    write never leaves a half dataset behind.
    """
    dataset_dir = Path(dataset_dir).expanduser().absolute()
    if (dataset_dir / SPLIT_FILE).is_file():
        return dataset_dir
    if dataset_dir.exists() and any(dataset_dir.iterdir()):
        raise ConfigError(
            f"{dataset_dir} exists but has no {SPLIT_FILE}; "
            "delete the folder so that the synthetic dataset is written again"
        )
    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_dir.name}.tmp-", dir=dataset_dir.parent))
    try:
        _write_into(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.replace(tmp, dataset_dir)  # also replaces an empty folder
        except OSError:
            if not (dataset_dir / SPLIT_FILE).is_file():
                raise
            # another process finished writing it first: theirs is identical
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_dir


@DATASET_REGISTRY.register()
class Synthetic(SplitFileDataset):
    """12 colour-shape classes, 24 train / 6 val / 10 test 64x64 images each."""

    folder = "synthetic"
    image_folder = "images"
    split_file = SPLIT_FILE

    def missing_hint(self, what: str | None = None) -> str:
        return f"delete {self.dataset_dir} so that the synthetic dataset is written again"

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        write_synthetic_dataset(self.dataset_dir)
        return super().read_data()
