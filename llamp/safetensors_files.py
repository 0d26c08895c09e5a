"""Safetensors files as the knowledge cache keeps them: written atomically with their digest, checked by
their header, read by rows.

A header check reads no tensor data: it confirms the file holds every byte
its header describes and the tensors it should, so a truncated copy or an
interrupted write is caught on open rather than as garbage later. Reading
rows touches only those rows of a memory-mapped file.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any, Mapping

import torch

from .atomic_files import write_atomic
from .errors import ConfigError, MissingFileError

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8"}


def save_tensors_atomic(path: str, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Save ``tensors`` as safetensors via a temp file + rename; return (bytes, sha256)."""
    from safetensors.torch import save_file

    result: dict[str, Any] = {}

    def dump(tmp: str) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata or {}))
        result["bytes"] = os.path.getsize(tmp)
        result["sha256"] = file_sha256(tmp)
    write_atomic(path, dump)
    return result["bytes"], result["sha256"]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors_header(path: str) -> dict:
    """The JSON header of a safetensors file, after checking the file holds all the data it names.

    A missing file is a MissingFileError; a truncated or corrupt one a
    ConfigError naming the file. No tensor data is read.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"knowledge cache file {path} is missing")
    size = os.path.getsize(path)
    bad = f"knowledge cache file {path} is truncated or corrupt"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConfigError(f"{bad} ({size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ConfigError(f"{bad} (header needs {header_len} bytes, file has {size})")
            header = json.loads(f.read(header_len))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise ConfigError(f"{bad} (unreadable header)") from None
    data_bytes = max(ends, default=0)
    if 8 + header_len + data_bytes != size:
        raise ConfigError(f"{bad} ({size} bytes on disk, its header describes {8 + header_len + data_bytes})")
    return header


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name, e.g. ``"BF16"``."""
    return {v: k for k, v in SAFETENSORS_DTYPES.items()}[name]


def check_tensors(path: str, header: Mapping[str, Any], expect: Mapping[str, tuple[str, list[int]]]) -> None:
    """Every tensor ``expect`` names is in the file's ``header`` with that (safetensors dtype, shape)."""
    for name, (dtype, shape) in expect.items():
        info = header.get(name)
        if info is None:
            raise ConfigError(f"knowledge cache file {path} has no tensor {name!r}: rebuild the cache")
        if info.get("dtype") != dtype or list(info.get("shape", [])) != shape:
            raise ConfigError(f"knowledge cache file {path}: {name} is {info.get('dtype')} "
                              f"{info.get('shape')}, expected {dtype} {shape}: rebuild the cache")


def read_rows(handle, name: str, rows: torch.Tensor, seq_start: int | None) -> torch.Tensor:
    """``tensor[rows]`` (and ``[..., seq_start:, :]`` for K/V), reading contiguous runs of rows only."""
    view = handle.get_slice(name)
    unique, inverse = torch.unique(rows, return_inverse=True)  # sorted
    parts, run_start = [], 0
    values = unique.tolist()
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            lo, hi = values[run_start], values[i - 1] + 1
            parts.append(view[lo:hi] if seq_start is None else view[lo:hi, :, seq_start:, :])
            run_start = i
    if not parts:
        shape = list(view.get_shape())
        shape[0] = 0
        if seq_start is not None:
            shape[2] -= seq_start
        return torch.empty(shape, dtype=torch_dtype(view.get_dtype()))
    return torch.cat(parts)[inverse]
