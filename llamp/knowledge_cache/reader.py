"""Reading a knowledge cache: validated when opened, only the requested rows read from disk.

The format is ``llamp.knowledge_cache.files``'s. Opening checks what would
otherwise give silently wrong results: the LLM's identity and weight digests,
the CLIP that made the targets, the layer count, every file's size and
tensor shapes. Classes are looked up by name, so one cache serves every subset.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..cache_kv import CacheKV
from ..errors import ConfigError, MissingFileError
from ..llm.identity import compare_llm_identity
from .safetensors_files import (SAFETENSORS_DTYPES, TensorFileReader, check_tensors, file_sha256,
                                 read_safetensors_header)
from .files import (build_command, FORMAT_VERSION, HEADER_FIELDS, KV_DTYPES, MASK_KEY, METADATA_FILE,
                    TARGETS_KEY, key_name, read_metadata, value_name)


class KnowledgeCache:
    """Read-only access to a built cache folder (see the module doc for the layout).

    Open it with :meth:`open`, which validates the folder; tensors are read
    lazily, only the rows that are asked for (positioned reads, no memory map).
    """

    def __init__(self, folder: str, metadata: dict, num_layers: int):
        self.folder = folder
        self.metadata = metadata
        self.classnames: list[str] = list(metadata["classnames"])
        self.query_templates: list[str] = list(metadata["query_templates"])
        self.llm: dict = dict(metadata["llm"])
        self.kept_layers: list[int] = list(metadata["kept_layers"])
        self.layer_indices: list[int] = self.kept_layers[len(self.kept_layers) - num_layers:]
        self.dtype: torch.dtype = KV_DTYPES[metadata["dtype"]]
        self.dataset: str = metadata["dataset"]
        self.num_classes, self.num_templates = len(self.classnames), len(self.query_templates)
        self.num_layers = num_layers  # the last decoder layers :meth:`kv` returns
        self._entries = {e["index"]: e for e in metadata.get("templates") or []}
        self._index = {name: i for i, name in enumerate(self.classnames)}
        self._files: dict[str, Any] = {}
        self._masks: dict[int, torch.Tensor] = {}

    # -- opening and validation

    @classmethod
    def open(cls, folder: str, expected_llm: Mapping[str, Any] | None = None, num_layers: int | None = None,
             build_hint: str | None = None, allow_incomplete: bool = False,
             expected_clip: Any = None) -> "KnowledgeCache":
        """Open and validate the cache in ``folder``.

        ``expected_llm``: the identity (``llamp.llm.identity.llm_identity``) of the
        LLM the cache will be used with: shapes, rope settings, the config hash and
        the weight digests of the decoder layers it gives must match those recorded.
        ``expected_clip``: the ``LoadedCLIP`` the caller pairs with the distillation
        targets; its text weights must be the ones that made them.
        ``num_layers``: how many of the last decoder layers the caller needs
        (default: all kept); :meth:`kv` returns exactly those.
        ``build_hint``: the command that builds this cache, quoted in errors.
        ``allow_incomplete``: open a partial build (for inspection).
        """
        folder = os.path.abspath(os.path.expanduser(folder))
        hint = build_hint or build_command()
        meta_path = os.path.join(folder, METADATA_FILE)
        if not os.path.isdir(folder):
            raise MissingFileError(f"knowledge cache folder {folder} not found: build it with {hint}")
        meta = read_metadata(folder)
        if meta is None:
            raise MissingFileError(f"knowledge cache {meta_path} not found: build it with {hint}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{meta_path} has format_version {meta.get('format_version')!r}, this code "
                              f"reads {FORMAT_VERSION}: rebuild the cache with {hint}")
        for key in HEADER_FIELDS:
            if key not in meta:
                raise ConfigError(f"{meta_path} lacks {key!r}: rebuild the cache with {hint}")
        if meta["dtype"] not in KV_DTYPES:
            raise ConfigError(f"{meta_path}: unsupported dtype {meta['dtype']!r}")
        rerun = meta.get("build_command") or hint

        done = {e.get("index") for e in meta.get("templates") or []}
        missing = [i for i in range(len(meta["query_templates"])) if i not in done]
        if not allow_incomplete and (missing or not meta.get("targets") or not meta.get("complete")):
            parts = [f"{len(done)} of {len(meta['query_templates'])} query templates"]
            if not meta.get("targets"):
                parts.append("no distillation targets")
            if not missing and meta.get("targets"):
                parts.append("a later run that updates it was interrupted")
            raise ConfigError(f"knowledge cache {folder} is an incomplete build ({', '.join(parts)}): "
                              f"run {rerun} again to finish it")

        kept = len(meta["kept_layers"])
        if num_layers is None:
            num_layers = kept
        if not 1 <= num_layers <= kept:
            raise ConfigError(f"knowledge cache {folder} keeps the last {kept} decoder layer(s), {num_layers} "
                              f"needed: rebuild it with --num-layers {num_layers}")

        if expected_llm is not None:
            if expected_llm.get("layer_sha256") and not meta["llm"].get("layer_sha256"):
                raise ConfigError(f"knowledge cache {folder} records no LLM weight digests (built by an older "
                                  f"version): rebuild it with {hint}")
            diff = compare_llm_identity(meta["llm"], expected_llm)
            if diff:
                raise ConfigError(f"knowledge cache {folder} was built with another LLM than "
                                  f"{expected_llm['source']} ({meta['llm'].get('source')}: {diff}); rebuild it "
                                  f"with {hint}")
        if expected_clip is not None and meta.get("targets"):
            made_by = meta["targets"].get("clip") or {}
            embed = expected_clip.model.config.projection_dim
            if meta["targets"].get("embed_dim") != embed:
                raise ConfigError(f"knowledge cache {folder}: its distillation targets are "
                                  f"{meta['targets'].get('embed_dim')}-d but the CLIP {expected_clip.source} gives "
                                  f"{embed}-d features: rebuild it with {hint}")
            if made_by.get("text_sha256") != expected_clip.text_sha256():
                raise ConfigError(f"knowledge cache {folder}: its distillation targets were made with the CLIP "
                                  f"{made_by.get('source')}, not with {expected_clip.source} (their text weights "
                                  f"differ): rebuild it with {hint}")

        cache = cls(folder, meta, num_layers)
        for index in sorted(cache._entries):
            cache._check_kv_file(cache._entries[index])
        if meta.get("targets"):
            cache._check_targets_file()
        return cache

    def _check_kv_file(self, entry: Mapping[str, Any]) -> None:
        path = os.path.join(self.folder, entry["file"])
        header = self._checked_header(path, entry)
        classes = len(self.classnames)
        heads, head_dim = self.llm["num_key_value_heads"], self.llm["head_dim"]
        expect = {MASK_KEY: ("I8", [classes, entry["seq_len"]])}
        for layer in self.kept_layers:
            shape = [classes, heads, entry["seq_len"], head_dim]
            expect[key_name(layer)] = expect[value_name(layer)] = (SAFETENSORS_DTYPES[self.dtype], shape)
        check_tensors(path, header, expect)
        file_meta = header.get("__metadata__") or {}
        if (file_meta.get("template_index") != str(entry["index"])
                or file_meta.get("input_sha256") != entry.get("input_sha256")):
            raise ConfigError(f"knowledge cache file {path} does not belong to this metadata.json "
                              "(written by another build): rebuild the cache")

    def _check_targets_file(self) -> None:
        entry = self.metadata["targets"]
        path = os.path.join(self.folder, entry["file"])
        header = self._checked_header(path, entry)
        check_tensors(path, header, {TARGETS_KEY: ("F32", [len(self.classnames), entry["embed_dim"]])})

    def _checked_header(self, path: str, entry: Mapping[str, Any]) -> dict:
        header = read_safetensors_header(path)
        size = os.path.getsize(path)
        if entry.get("bytes") is not None and size != entry["bytes"]:
            raise ConfigError(f"knowledge cache file {path} is truncated or corrupt ({size} bytes, "
                              f"metadata.json says {entry['bytes']}): rebuild the cache")
        return header

    # -- what is in it

    @property
    def layout(self) -> str:
        """How the cached token sequence was built (``llm_prompts.layouts``); older caches are contiguous."""
        return str(self.metadata.get("layout") or "contiguous")

    @property
    def complete(self) -> bool:
        return bool(self.metadata.get("complete"))

    @property
    def available_templates(self) -> list[int]:
        return sorted(self._entries)

    @property
    def embed_dim(self) -> int:
        return int(self.metadata["targets"]["embed_dim"])

    def seq_len(self, template_index: int) -> int:
        """Padded sequence length stored for a template (before any trimming)."""
        return int(self._entry(template_index)["seq_len"])

    def template_info(self, template_index: int) -> dict | None:
        """The metadata.json entry of a template's file (file, seq_len, bytes, sha256), or None if not built."""
        entry = self._entries.get(template_index)
        return dict(entry) if entry is not None else None

    def kv_shape(self, template_index: int) -> list[int]:
        """Stored shape of each keys/values tensor of a template: ``[classes, kv_heads, seq, head_dim]``."""
        return [self.num_classes, self.llm["num_key_value_heads"], self.seq_len(template_index), self.llm["head_dim"]]

    def lengths(self, template_index: int) -> torch.Tensor:
        """Number of real (unpadded) tokens of every class ``[classes]`` for a template."""
        return self._mask(template_index, self._entry(template_index)).sum(-1).long()

    def bytes_on_disk(self) -> int:
        """Total size of the files in the cache folder."""
        with os.scandir(self.folder) as entries:
            return sum(e.stat().st_size for e in entries if e.is_file())

    # -- reading

    def select(self, classnames: Iterable[str]) -> torch.Tensor:
        """Row indices ``[n]`` of ``classnames`` in this cache (exact names, any order)."""
        names = list(classnames)
        missing = [n for n in names if n not in self._index]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ConfigError(
                f"{len(missing)} of {len(names)} class names are not in the knowledge cache {self.folder} "
                f"(dataset {self.dataset}, {self.num_classes} classes): {shown}; build the cache for this "
                "dataset's class list")
        return torch.tensor([self._index[n] for n in names], dtype=torch.long)

    def kv(self, template_index: int, class_indices: Sequence[int] | torch.Tensor, device: Any = None,
           dtype: torch.dtype | None = None, trim: bool = True, pin: bool = False) -> CacheKV:
        """Keys/values of the last ``num_layers`` layers and the mask, for template ``template_index``.

        Only the requested rows are read from disk. ``trim`` drops the leading
        columns that are padding for every requested class (columns in a gap
        are kept: the mask covers them). Results go to ``device`` (default
        CPU) in ``dtype`` (default: as stored); ``pin``: to pinned host memory
        (for a non-blocking copy to a GPU), read there directly when no
        conversion is needed.
        """
        entry = self._entry(template_index)
        rows = self._rows(class_indices)
        mask = self._mask(template_index, entry)[rows]
        start = _first_token_column(mask) if trim else 0
        file = self._open(entry["file"])
        convert = dtype is not None and dtype != self.dtype

        def read(name: str) -> torch.Tensor:
            t = file.read(name, rows, start, pin=pin and not convert)
            if convert:
                t = torch.empty(t.shape, dtype=dtype, pin_memory=pin).copy_(t)
            return t.to(device)

        keys = [read(key_name(layer)) for layer in self.layer_indices]
        values = [read(value_name(layer)) for layer in self.layer_indices]
        mask = mask[:, start:].long()
        mask = (mask.pin_memory() if pin else mask).to(device)
        return CacheKV(keys, values, mask, list(self.layer_indices))

    def targets(self, class_indices: Sequence[int] | torch.Tensor | None = None, device: Any = None) -> torch.Tensor:
        """Normalised distillation targets ``[n, embed]`` (fp32) of the given rows (default: all)."""
        entry = self.metadata.get("targets")
        if not entry:
            raise ConfigError(f"knowledge cache {self.folder} has no distillation targets yet: finish the build")
        rows = None if class_indices is None else self._rows(class_indices)
        return self._open(entry["file"]).read(TARGETS_KEY, rows).to(device)

    def verify(self) -> None:
        """Check every file's sha256 against metadata.json (reads all data; ConfigError naming a bad file)."""
        entries = [self._entries[i] for i in sorted(self._entries)]
        if self.metadata.get("targets"):
            entries.append(self.metadata["targets"])
        for entry in entries:
            path = os.path.join(self.folder, entry["file"])
            if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                raise ConfigError(f"knowledge cache file {path} is corrupt (sha256 differs from metadata.json): "
                                  "run the build again, which rewrites it")

    # -- helpers

    def _entry(self, template_index: int) -> Mapping[str, Any]:
        if not 0 <= template_index < self.num_templates:
            raise IndexError(f"template index {template_index} out of range (0..{self.num_templates - 1})")
        entry = self._entries.get(template_index)
        if entry is None:
            raise ConfigError(f"knowledge cache {self.folder} has no keys/values for query template "
                              f"{template_index} yet: finish the build")
        return entry

    def _rows(self, class_indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(class_indices, dtype=torch.long).flatten().cpu()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_classes):
            raise IndexError(f"class index out of range (cache has {self.num_classes} classes)")
        return rows

    def _open(self, file: str) -> TensorFileReader:
        if file not in self._files:  # read by rows, as asked (no memory map: see TensorFileReader)
            path = os.path.join(self.folder, file)
            self._files[file] = TensorFileReader(path, read_safetensors_header(path))
        return self._files[file]

    def _mask(self, template_index: int, entry: Mapping[str, Any]) -> torch.Tensor:
        if template_index not in self._masks:  # small ([classes, seq] int8): kept in memory
            self._masks[template_index] = self._open(entry["file"]).read(MASK_KEY)
        return self._masks[template_index]


def _first_token_column(mask: torch.Tensor) -> int:
    """The first column that holds a real token in any row of ``mask`` ``[n, seq]`` (0 if none does).

    Not ``seq - max(lengths)``: with a gap in the middle, a row's tokens span
    more columns than it has tokens.
    """
    real = mask.bool().any(0).nonzero()
    return int(real[0]) if len(real) else 0
