"""Writing a knowledge cache folder file by file, so that an interrupted build resumes where it stopped.

The format is ``llamp.knowledge_cache.files``'s. ``metadata.json`` is rewritten
after each file and lists a file only once it is complete.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from ..atomic_files import write_json_atomic
from ..errors import ConfigError
from ..llm.identity import compare_llm_identity
from .safetensors_files import file_sha256, read_safetensors_header, save_tensors_atomic
from .files import (FORMAT, FORMAT_VERSION, HEADER_FIELDS, KV_DTYPES, MASK_KEY, METADATA_FILE, TARGETS_FILE,
                    TARGETS_KEY, key_name, kv_file_name, read_metadata, value_name)


class CacheWriter:
    """Writes a cache folder file by file; ``metadata.json`` is rewritten after each file.

    ``header`` holds the fields that describe the whole cache: ``dataset``,
    ``classnames``, ``query_templates``, ``llm`` (an :func:`llm_identity`),
    ``kept_layers``, ``dtype`` and any extra description of the build
    (``layout``, prompt wording and its file, generation settings, the command). Files that an earlier
    run finished stay listed; :meth:`template_done` says whether one can be
    kept (same inputs) or must be written again.
    """

    def __init__(self, folder: str, header: Mapping[str, Any]):
        for key in HEADER_FIELDS:
            if key not in header:
                raise ValueError(f"cache header lacks {key!r}")
        self.folder = folder
        old = read_metadata(folder)
        if old is not None:
            self._check_same_cache(old, header)
        num_templates = len(header["query_templates"])
        old_templates = (old or {}).get("templates") or []
        if old is not None and old.get("dtype") != header["dtype"]:
            old_templates = []  # stored in another dtype: every file is rewritten, none may stay listed
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **header,
            "num_layers": len(header["kept_layers"]),
            "templates": [e for e in old_templates if isinstance(e, dict) and e.get("index", -1) < num_templates],
            "targets": (old or {}).get("targets"),
            "complete": False,
        }
        self._write_metadata()

    def _check_same_cache(self, old: Mapping[str, Any], header: Mapping[str, Any]) -> None:
        where = os.path.join(self.folder, METADATA_FILE)
        if old.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{where} has format_version {old.get('format_version')} (this code writes "
                              f"{FORMAT_VERSION}): delete {self.folder} and build again")
        if old.get("dataset") != header["dataset"]:
            raise ConfigError(f"{self.folder} holds the cache of dataset {old.get('dataset')}, not "
                              f"{header['dataset']}: choose another --out or delete the folder")
        diff = compare_llm_identity(old.get("llm") or {}, header["llm"])
        if diff:
            raise ConfigError(f"{self.folder} holds a cache built with another LLM "
                              f"({(old.get('llm') or {}).get('source')}: {diff}); choose another --out or "
                              "delete the folder")

    # -- query templates

    def _entry(self, index: int) -> dict | None:
        return next((e for e in self.meta["templates"] if e.get("index") == index), None)

    def template_done(self, index: int, input_sha256: str) -> bool:
        """True if template ``index`` is on disk, complete, and was built from the same inputs."""
        entry = self._entry(index)
        return (entry is not None and entry.get("input_sha256") == input_sha256
                and _file_intact(os.path.join(self.folder, entry["file"]), entry))

    def write_template(self, index: int, kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
                       mask: torch.Tensor, input_sha256: str) -> dict:
        """Save one template's keys/values (``{layer: (keys, values)}``) and mask; list it in the metadata."""
        classes, layers = len(self.meta["classnames"]), list(self.meta["kept_layers"])
        dtype = KV_DTYPES[self.meta["dtype"]]
        if sorted(kv) != sorted(layers):
            raise ValueError(f"expected keys/values of layers {layers}, got {sorted(kv)}")
        if mask.dim() != 2 or mask.shape[0] != classes:
            raise ValueError(f"mask must be [classes={classes}, seq], got {list(mask.shape)}")
        keep = mask.bool()[:, None, :, None]
        tensors = {MASK_KEY: mask.to(torch.int8)}
        for layer in layers:
            for name, t in zip((key_name(layer), value_name(layer)), kv[layer]):
                if t.dim() != 4 or t.shape[0] != classes or t.shape[2] != mask.shape[1]:
                    raise ValueError(f"{name} must be [classes, kv_heads, seq, head_dim] matching the mask, "
                                     f"got {list(t.shape)}")
                tensors[name] = t.to(dtype).masked_fill(~keep, 0)  # padding holds zeros, not garbage
        file = kv_file_name(index)
        size, digest = save_tensors_atomic(os.path.join(self.folder, file), tensors,
                                           {"format": FORMAT, "template_index": str(index),
                                            "input_sha256": input_sha256})
        entry = {"index": index, "file": file, "seq_len": int(mask.shape[1]), "bytes": size,
                 "sha256": digest, "input_sha256": input_sha256}
        self.meta["templates"] = sorted([e for e in self.meta["templates"] if e.get("index") != index] + [entry],
                                        key=lambda e: e["index"])
        self._write_metadata()
        return entry

    # -- distillation targets

    def targets_done(self, input_sha256: str, clip_text_sha256: str | None = None) -> bool:
        """True if the targets are on disk, complete, built from the same inputs and, given
        ``clip_text_sha256``, recorded as made by that CLIP (the reader checks the record, so a
        damaged record must be rewritten even when the inputs are unchanged)."""
        entry = self.meta.get("targets")
        if not isinstance(entry, dict) or entry.get("input_sha256") != input_sha256:
            return False
        made_by = entry.get("clip")
        if clip_text_sha256 is not None and (not isinstance(made_by, dict)
                                             or made_by.get("text_sha256") != clip_text_sha256):
            return False
        return _file_intact(os.path.join(self.folder, entry["file"]), entry)

    def write_targets(self, targets: torch.Tensor, input_sha256: str, **info: Any) -> dict:
        """Save the ``[classes, embed]`` targets (normalised here); ``info`` describes the CLIP used."""
        if targets.dim() != 2 or targets.shape[0] != len(self.meta["classnames"]):
            raise ValueError(f"targets must be [classes, embed], got {list(targets.shape)}")
        targets = torch.nn.functional.normalize(targets.float(), dim=-1)
        size, digest = save_tensors_atomic(os.path.join(self.folder, TARGETS_FILE), {TARGETS_KEY: targets},
                                           {"format": FORMAT, "input_sha256": input_sha256})
        self.meta["targets"] = {"file": TARGETS_FILE, "embed_dim": int(targets.shape[1]), "dtype": "float32",
                                "bytes": size, "sha256": digest, "input_sha256": input_sha256, **info}
        self._write_metadata()
        return self.meta["targets"]

    def finish(self) -> None:
        """Mark the cache complete (every template and the targets written)."""
        done = {e["index"] for e in self.meta["templates"]}
        missing = [i for i in range(len(self.meta["query_templates"])) if i not in done]
        if missing or not self.meta.get("targets"):
            raise RuntimeError(f"cannot finish {self.folder}: templates {missing} or targets missing")
        self.meta["complete"] = True
        self._write_metadata()

    def _write_metadata(self) -> None:
        write_json_atomic(os.path.join(self.folder, METADATA_FILE), self.meta)


def _file_intact(path: str, entry: Mapping[str, Any]) -> bool:
    """The file is whole and holds the bytes ``entry`` recorded (read in full: a file kept by a build is
    one that training would read, damaged or not)."""
    try:
        read_safetensors_header(path)
    except ConfigError:
        return False
    if entry.get("bytes") is not None and os.path.getsize(path) != entry["bytes"]:
        return False
    return entry.get("sha256") is None or file_sha256(path) == entry["sha256"]
