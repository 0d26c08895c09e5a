"""Checkpoints in Dassl's folder layout, read without unpickling code.

Layout (what Dassl, CoOp and MaPLe write, so scripts and habits carry over):
``<dir>/<model name>/model.pth.tar-<epoch>``, ``model-best.pth.tar``, and a
``checkpoint`` file naming the latest one. Files are written atomically and
read with ``torch.load(weights_only=True)``: a checkpoint holds tensors,
numbers and strings only.
"""
from __future__ import annotations

import os

import torch

from llamp.atomic_files import write_atomic, write_text_atomic
from llamp.errors import ConfigError, MissingFileError

LATEST_FILE = "checkpoint"
BEST_NAME = "model-best.pth.tar"


def epoch_file_name(epoch: int) -> str:
    return f"model.pth.tar-{epoch}"


def _torch_save_atomic(obj: dict, path: str) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch derives nothing from the temp name
            torch.save(obj, f)

    write_atomic(path, dump)


def save_checkpoint(state: dict, folder: str, file_name: str) -> str:
    """Write ``state`` to ``folder/file_name`` and record it as the latest."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, file_name)
    _torch_save_atomic(state, path)
    if file_name != BEST_NAME:
        write_text_atomic(os.path.join(folder, LATEST_FILE), file_name + "\n")
    print(f"Checkpoint saved to {path}")
    return path


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain values only)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def latest_checkpoint(folder: str) -> str | None:
    """Path of the latest checkpoint recorded in ``folder``, or None if there is none."""
    record = os.path.join(folder, LATEST_FILE)
    if not os.path.isfile(record):
        return None
    with open(record) as f:
        name = f.readline().strip()
    return os.path.join(folder, name) if name else None
