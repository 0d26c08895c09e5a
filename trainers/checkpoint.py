"""Checkpoints in Dassl's folder layout, read without unpickling code.

Layout (what Dassl, CoOp and MaPLe write, so scripts and habits carry over):
``<dir>/<model name>/model.pth.tar-<epoch>``, ``model-best.pth.tar``, and a
``checkpoint`` file naming the latest one. Files are written atomically and
read with ``torch.load(weights_only=True)``: a checkpoint holds tensors,
numbers and strings only. A damaged file (cut short, bytes changed) fails the
CRC check of its zip container; a resume then falls back to the newest older
checkpoint that reads, which re-trains the later epochs to the same weights.
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import Mapping

import torch

from llamp.atomic_files import write_atomic, write_text_atomic
from llamp.errors import ConfigError, MissingFileError, note

LATEST_FILE = "checkpoint"
BEST_NAME = "model-best.pth.tar"
_EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")


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
    damage = _damage(path)
    if damage:
        raise ConfigError(f"checkpoint {path} is damaged ({damage})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _damage(path: str) -> str | None:
    """What is wrong with the zip container torch.save writes (every member's CRC is checked), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # a file cut short has no zip directory; a changed header fails to parse
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    return None if bad is None else f"{bad} fails its CRC check"


def latest_checkpoint(folder: str) -> str | None:
    """Path of the latest checkpoint recorded in ``folder``, or None if there is none."""
    record = os.path.join(folder, LATEST_FILE)
    if not os.path.isfile(record):
        return None
    with open(record) as f:
        name = f.readline().strip()
    return os.path.join(folder, name) if name else None


def resume_checkpoints(folders: Mapping[str, str]) -> dict[str, tuple[str, dict]] | None:
    """Each model's checkpoint to resume from (name -> its folder): ``{name: (path, state)}``, or None
    when a folder records no checkpoint.

    The latest ones, as recorded; if one is damaged or missing, the newest older epoch whose checkpoints
    every model reads, with a note naming both. Without one, a ConfigError saying how to start again.
    """
    latest = {name: latest_checkpoint(folder) for name, folder in folders.items()}
    if not latest or any(path is None for path in latest.values()):
        return None
    try:
        return {name: (path, load_checkpoint(path)) for name, path in latest.items()}
    except ConfigError as e:
        damaged = e
    for epoch in _older_epochs(folders, latest):
        paths = {name: os.path.join(folder, epoch_file_name(epoch)) for name, folder in folders.items()}
        try:
            found = {name: (path, load_checkpoint(path)) for name, path in paths.items()}
        except ConfigError:
            continue
        note(f"{damaged}; resuming from {', '.join(paths.values())}, the newest older checkpoint that reads "
             "(the epochs after it are trained again)")
        return found
    records = " and ".join(os.path.join(folder, LATEST_FILE) for folder in folders.values())
    raise ConfigError(f"{damaged}, and no older checkpoint reads: delete {records} to train from scratch")


def _older_epochs(folders: Mapping[str, str], latest: Mapping[str, str]) -> list[int]:
    """The epochs before the latest recorded one that every folder holds a checkpoint of, newest first."""
    epochs = None
    for name, folder in folders.items():
        match = _EPOCH_FILE.fullmatch(os.path.basename(latest[name]))
        below = int(match[1]) if match else 0  # another name (a model-best): no epoch files before it
        present = {int(m[1]) for m in map(_EPOCH_FILE.fullmatch, os.listdir(folder)) if m and int(m[1]) < below}
        epochs = present if epochs is None else epochs & present
    return sorted(epochs or (), reverse=True)
