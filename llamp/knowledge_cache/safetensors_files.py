"""Safetensors files as the knowledge cache keeps them: written atomically with their digest, checked by
their header, read by rows.

A header check reads no tensor data: it confirms the file holds every byte
its header describes and the tensors it should, so a truncated copy or an
interrupted write is caught on open rather than as garbage later. Reading
rows (:class:`TensorFileReader`) reads only those rows, with positioned reads.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from typing import Any, Mapping

import torch

from ..atomic_files import write_atomic
from ..errors import ConfigError, MissingFileError

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8"}
_DTYPE_RANK = ("I8", "F16", "BF16", "F32")  # as safetensors ranks them (its file order: highest first)


def save_tensors_atomic(path: str, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Save ``tensors`` as safetensors via a temp file + rename; return (bytes, sha256)."""
    result: dict[str, Any] = {}

    def dump(tmp: str) -> None:
        write_safetensors(tmp, tensors, metadata)
        result["bytes"] = os.path.getsize(tmp)
        result["sha256"] = file_sha256(tmp)
    write_atomic(path, dump)
    return result["bytes"], result["sha256"]


def write_safetensors(path: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> None:
    """The layout of safetensors' ``save_file`` (tensors by dtype, widest first, then by name; the header
    padded with spaces to 8 bytes), with the metadata in sorted order: the same tensors give the same bytes
    in every process (``save_file`` orders the metadata by a hash seeded anew in each process)."""
    items = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    order = sorted(items, key=lambda k: (-_DTYPE_RANK.index(SAFETENSORS_DTYPES[items[k].dtype]), k))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name in order:
        size = items[name].numel() * items[name].element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[items[name].dtype], "shape": list(items[name].shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            f.write(items[name].reshape(-1).view(torch.uint8).numpy().data)


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


MAX_READ_BYTES = 1 << 28


class TensorFileReader:
    """Tensors of one safetensors file read by rows with positioned reads (``os.preadv``), no memory map.

    A memory map would leave every page it touched in the process's resident
    memory: over a training run every template's rows of the classes get read,
    up to the whole cache (its size: README, Performance). Read this way, the
    file's pages stay in the kernel's page cache, shared and outside the
    process; the process holds only the tensors returned. ``header`` comes from
    :func:`read_safetensors_header`, which checked the file's size.
    """

    def __init__(self, path: str, header: Mapping[str, Any]):
        self.path = path
        self.header = header
        self._fd = None
        self._fd = os.open(path, os.O_RDONLY)
        with open(path, "rb") as f:
            self._data_start = 8 + struct.unpack("<Q", f.read(8))[0]

    # A copy (pickle, deepcopy) opens its own descriptor: two objects must never close the same one.
    def __getstate__(self) -> dict:
        return {"path": self.path, "header": self.header}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["header"])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()

    def read(self, name: str, rows: torch.Tensor | None = None, seq_start: int | None = None,
             pin: bool = False) -> torch.Tensor:
        """``tensor[rows]`` (every row if None; any order, repeats allowed), and with ``seq_start`` only
        ``[..., seq_start:, :]`` of a ``[n, heads, seq, head_dim]`` tensor. ``pin``: into pinned memory."""
        info = self.header[name]
        shape, dtype = list(info["shape"]), torch_dtype(info["dtype"])
        item = dtype.itemsize
        rows = torch.arange(shape[0]) if rows is None else rows
        row_bytes = math.prod(shape[1:]) * item
        first = self._data_start + info["data_offsets"][0]
        trim = seq_start or 0
        out_shape = [len(rows), *shape[1:]]
        if trim:
            out_shape[2] -= trim
        out = torch.empty(out_shape, dtype=dtype, pin_memory=pin)
        if out.numel() == 0:
            return out
        buffer = memoryview(out.view(-1).view(torch.uint8).numpy())  # the output's bytes, written in place
        if not trim:  # a run of consecutive rows is one contiguous range of the file: one read per run
            i, order = 0, rows.tolist()
            most = max(1, MAX_READ_BYTES // row_bytes)  # Linux moves at most about 2 GiB per read
            while i < len(order):
                j = i + 1
                while j < len(order) and j - i < most and order[j] == order[j - 1] + 1:
                    j += 1
                self._read_into([buffer[i * row_bytes:j * row_bytes]], first + order[i] * row_bytes)
                i = j
            return out
        # With the leading columns trimmed, a row's kept part is one span per head, separated by the
        # trimmed columns: one read per row, the gaps read into a scratch buffer and dropped.
        heads, seq, tail = shape[1], shape[2], math.prod(shape[3:]) * item
        kept, skipped = (seq - trim) * tail, trim * tail
        gap = memoryview(bytearray(skipped))
        out_row = heads * kept
        for i, row in enumerate(rows.tolist()):
            spans = []
            for h in range(heads):
                if h:
                    spans.append(gap)
                spans.append(buffer[i * out_row + h * kept:i * out_row + (h + 1) * kept])
            self._read_into(spans, first + row * row_bytes + skipped)
        return out

    def _read_into(self, buffers: list[memoryview], offset: int) -> None:
        wanted = sum(len(b) for b in buffers)
        if hasattr(os, "preadv"):
            got = os.preadv(self._fd, buffers, offset)
        else:  # platforms without preadv: one read per buffer
            got = 0
            for b in buffers:
                data = os.pread(self._fd, len(b), offset + got)
                b[:len(data)] = data
                got += len(data)
        if got != wanted:  # a short read: the file changed or shrank since it was opened
            raise ConfigError(f"knowledge cache file {self.path} is truncated or corrupt (read {got} of "
                              f"{wanted} bytes at offset {offset}): rebuild the cache")
