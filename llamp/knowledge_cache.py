"""The LLaMP knowledge cache on disk: its format, a writer, and a validating reader.

One folder per (dataset, LLM), built by ``python -m llm_prompts build``::

    metadata.json          everything that is not a tensor (written last, after every file)
    descriptions.jsonl     the LLM's answers and their noun phrases, one JSON object a line
                           (read and written by ``llm_prompts.descriptions``; not needed for training)
    kv_t00.safetensors     query template 0: for every kept decoder layer L
                             layers.L.keys / layers.L.values  [classes, kv_heads, seq, head_dim]
                             attention_mask                   [classes, seq] (int8, 1 = token)
    kv_t01.safetensors     ... one file per query template
    targets.safetensors    targets [classes, embed]: normalised CLIP distillation targets (fp32)

Each row is one class's token sequence, padded to the template's longest; the
mask says which slots hold real tokens. ``metadata["layout"]`` names how the
sequence was built (``llm_prompts.layouts``): ``"release"`` (the default) is
``[pad][prompt][pad][BOS noun phrases]``, so a row has padding in the middle
as well as on the left; ``"contiguous"`` is one left-padded run. Either way a
real token's rotary position is the number of real tokens before it
(``cumsum(mask) - 1``), positions run on across a gap, and new tokens continue
at ``mask.sum()``: a consumer needs only the mask. Keys are stored after the
rotary embedding, as the attention layer caches them. Padding slots hold
zeros and have mask 0. Caches written before the layout was recorded are
contiguous. Class rows follow
``metadata["classnames"]``; one cache built over all classes serves the base,
new and all subsets, since :meth:`KnowledgeCache.select` looks classes up by name.

Tensors live only in safetensors files and everything else in JSON: a cache
never runs code when it is read (no pickle). Every file is written to a temp
name and renamed into place, and ``metadata.json`` lists a file only once it is
complete, so a killed build leaves a readable, resumable folder. The reader
memory-maps the files and copies out only the rows a call asks for.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

from .atomic_files import write_atomic, write_json_atomic
from .errors import ConfigError, MissingFileError
from .llm_identity import compare_llm_identity, llm_folder_name, llm_identity

FORMAT = "llamp-knowledge-cache"
CACHE_FOLDER = "llamp_cache"  # under a dataset's folder, one sub-folder per LLM
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
DESCRIPTIONS_FILE = "descriptions.jsonl"
TARGETS_FILE = "targets.safetensors"
MASK_KEY = "attention_mask"
TARGETS_KEY = "targets"
BUILD_COMMAND_HINT = (
    "python -m llm_prompts build --root DATA --dataset-config-file configs/datasets/<dataset>.yaml "
    "--llm <LLM folder> --clip <CLIP folder or file>"
)
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8"}
_KV_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_cache_folder(dataset_dir: str, llm: str) -> str:
    """Where the build puts a cache by default: ``<dataset folder>/llamp_cache/<LLM folder name>``."""
    return os.path.join(dataset_dir, CACHE_FOLDER, llm_folder_name(llm))


def kv_file_name(template_index: int) -> str:
    """File of one query template's keys/values, e.g. ``kv_t03.safetensors``."""
    return f"kv_t{template_index:02d}.safetensors"


def key_name(layer: int) -> str:
    return f"layers.{layer}.keys"


def value_name(layer: int) -> str:
    return f"layers.{layer}.values"


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the spelling metadata.json uses)."""
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------- atomic files


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


# ---------------------------------------------------------------- writer


def read_metadata(folder: str) -> dict | None:
    """``metadata.json`` of a cache folder, or ``None`` if there is none yet."""
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); delete the folder and rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a LLaMP knowledge cache (no \"format\": \"{FORMAT}\")")
    return meta


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
        for key in ("dataset", "classnames", "query_templates", "llm", "kept_layers", "dtype"):
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
                and _file_intact(os.path.join(self.folder, entry["file"]), entry.get("bytes")))

    def write_template(self, index: int, kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
                       mask: torch.Tensor, input_sha256: str) -> dict:
        """Save one template's keys/values (``{layer: (keys, values)}``) and mask; list it in the metadata."""
        classes, layers = len(self.meta["classnames"]), list(self.meta["kept_layers"])
        dtype = _KV_DTYPES[self.meta["dtype"]]
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

    def targets_done(self, input_sha256: str) -> bool:
        entry = self.meta.get("targets")
        return (isinstance(entry, dict) and entry.get("input_sha256") == input_sha256
                and _file_intact(os.path.join(self.folder, entry["file"]), entry.get("bytes")))

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


def _file_intact(path: str, expected_bytes: int | None) -> bool:
    try:
        read_safetensors_header(path)
    except ConfigError:
        return False
    return expected_bytes is None or os.path.getsize(path) == expected_bytes


# ---------------------------------------------------------------- reader


@dataclass
class CachedKV:
    """One query template's cached keys/values for some classes.

    ``layers[i]`` is ``(keys, values)`` of decoder layer ``layer_indices[i]``,
    each ``[n, kv_heads, seq, head_dim]``; ``mask`` is ``[n, seq]`` (long, 1 =
    token). Padding may sit on the left and in the middle of a row (see the
    module doc); only the mask says where a class's tokens are.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    layer_indices: list[int]

    @property
    def lengths(self) -> torch.Tensor:
        """Number of cached tokens per class ``[n]``: new tokens continue at this position."""
        return self.mask.sum(-1)

    @property
    def positions(self) -> torch.Tensor:
        """Rotary position of every cached slot ``[n, seq]`` (left padding: 0; a gap repeats the position before it)."""
        return (self.mask.cumsum(-1) - 1).clamp(min=0)


class KnowledgeCache:
    """Read-only access to a built cache folder (see the module doc for the layout).

    Open it with :meth:`open`, which validates the folder; tensors are read
    lazily from memory-mapped files, only the rows that are asked for.
    """

    def __init__(self, folder: str, metadata: dict, num_layers: int):
        self.folder = folder
        self.metadata = metadata
        self.classnames: list[str] = list(metadata["classnames"])
        self.query_templates: list[str] = list(metadata["query_templates"])
        self.llm: dict = dict(metadata["llm"])
        self.kept_layers: list[int] = list(metadata["kept_layers"])
        self.layer_indices: list[int] = self.kept_layers[len(self.kept_layers) - num_layers:]
        self.dtype: torch.dtype = _KV_DTYPES[metadata["dtype"]]
        self._entries = {e["index"]: e for e in metadata.get("templates") or []}
        self._index = {name: i for i, name in enumerate(self.classnames)}
        self._files: dict[str, Any] = {}
        self._masks: dict[int, torch.Tensor] = {}

    # -- opening and validation

    @classmethod
    def open(cls, folder: str, expected_llm_config: Any = None, num_layers: int | None = None,
             build_hint: str | None = None, allow_incomplete: bool = False,
             expected_layer_sha256: Mapping[int, str] | None = None,
             expected_clip: Any = None) -> "KnowledgeCache":
        """Open and validate the cache in ``folder``.

        ``expected_llm_config``: the LLM the cache will be used with (a
        ``PretrainedConfig``, a raw config.json dict, or the model's folder);
        shapes, rope settings and the config hash must match.
        ``expected_layer_sha256``: weight digests of the decoder layers the caller
        reads (``llm_decoder.layer_sha256``), checked against those recorded at build.
        ``expected_clip``: the ``LoadedCLIP`` the caller pairs with the distillation
        targets; its text weights must be the ones that made them.
        ``num_layers``: how many of the last decoder layers the caller needs
        (default: all kept); :meth:`kv` returns exactly those.
        ``build_hint``: the command that builds this cache, quoted in errors.
        ``allow_incomplete``: open a partial build (for inspection).
        """
        folder = os.path.abspath(os.path.expanduser(folder))
        hint = build_hint or BUILD_COMMAND_HINT
        meta_path = os.path.join(folder, METADATA_FILE)
        if not os.path.isdir(folder):
            raise MissingFileError(f"knowledge cache folder {folder} not found: build it with {hint}")
        meta = read_metadata(folder)
        if meta is None:
            raise MissingFileError(f"knowledge cache {meta_path} not found: build it with {hint}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{meta_path} has format_version {meta.get('format_version')!r}, this code "
                              f"reads {FORMAT_VERSION}: rebuild the cache with {hint}")
        for key in ("dataset", "classnames", "query_templates", "llm", "kept_layers", "dtype"):
            if key not in meta:
                raise ConfigError(f"{meta_path} lacks {key!r}: rebuild the cache with {hint}")
        if meta["dtype"] not in _KV_DTYPES:
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

        if expected_llm_config is not None:
            expected = llm_identity(expected_llm_config)
            if expected_layer_sha256:
                if not meta["llm"].get("layer_sha256"):
                    raise ConfigError(f"knowledge cache {folder} records no LLM weight digests (built by an older "
                                      f"version): rebuild it with {hint}")
                expected["layer_sha256"] = {str(k): v for k, v in expected_layer_sha256.items()}
            diff = compare_llm_identity(meta["llm"], expected)
            if diff:
                raise ConfigError(f"knowledge cache {folder} was built with another LLM than {expected['source']} "
                                  f"({meta['llm'].get('source')}: {diff}); rebuild it with {hint}")
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
            expect[key_name(layer)] = expect[value_name(layer)] = (_SAFETENSORS_DTYPES[self.dtype], shape)
        self._check_tensors(path, header, expect)
        file_meta = header.get("__metadata__") or {}
        if (file_meta.get("template_index") != str(entry["index"])
                or file_meta.get("input_sha256") != entry.get("input_sha256")):
            raise ConfigError(f"knowledge cache file {path} does not belong to this metadata.json "
                              "(written by another build): rebuild the cache")

    def _check_targets_file(self) -> None:
        entry = self.metadata["targets"]
        path = os.path.join(self.folder, entry["file"])
        header = self._checked_header(path, entry)
        self._check_tensors(path, header, {TARGETS_KEY: ("F32", [len(self.classnames), entry["embed_dim"]])})

    def _checked_header(self, path: str, entry: Mapping[str, Any]) -> dict:
        header = read_safetensors_header(path)
        size = os.path.getsize(path)
        if entry.get("bytes") is not None and size != entry["bytes"]:
            raise ConfigError(f"knowledge cache file {path} is truncated or corrupt ({size} bytes, "
                              f"metadata.json says {entry['bytes']}): rebuild the cache")
        return header

    @staticmethod
    def _check_tensors(path: str, header: Mapping[str, Any], expect: Mapping[str, tuple[str, list[int]]]) -> None:
        for name, (dtype, shape) in expect.items():
            info = header.get(name)
            if info is None:
                raise ConfigError(f"knowledge cache file {path} has no tensor {name!r}: rebuild the cache")
            if info.get("dtype") != dtype or list(info.get("shape", [])) != shape:
                raise ConfigError(f"knowledge cache file {path}: {name} is {info.get('dtype')} "
                                  f"{info.get('shape')}, expected {dtype} {shape}: rebuild the cache")

    # -- what is in it

    @property
    def dataset(self) -> str:
        return self.metadata["dataset"]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def num_templates(self) -> int:
        return len(self.query_templates)

    @property
    def num_layers(self) -> int:
        """Decoder layers :meth:`kv` returns (the last ``num_layers`` of the LLM)."""
        return len(self.layer_indices)

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
           dtype: torch.dtype | None = None, trim: bool = True) -> CachedKV:
        """Keys/values of the last ``num_layers`` layers and the mask, for template ``template_index``.

        Only the requested rows are read from disk. ``trim`` drops the leading
        columns that are padding for every requested class (columns in a gap
        are kept: the mask covers them). Results go to ``device`` (default
        CPU) in ``dtype`` (default: as stored).
        """
        entry = self._entry(template_index)
        rows = self._rows(class_indices)
        mask = self._mask(template_index, entry)[rows]
        start = _first_token_column(mask) if trim else 0
        handle = self._open(entry["file"])
        layers = []
        for layer in self.layer_indices:
            pair = tuple(self._read_rows(handle, name, rows, start) for name in (key_name(layer), value_name(layer)))
            layers.append(tuple(t.to(device=device, dtype=dtype or t.dtype) for t in pair))
        mask = mask[:, start:].long().to(device)
        return CachedKV(layers=layers, mask=mask, layer_indices=list(self.layer_indices))

    def targets(self, class_indices: Sequence[int] | torch.Tensor | None = None, device: Any = None) -> torch.Tensor:
        """Normalised distillation targets ``[n, embed]`` (fp32) of the given rows (default: all)."""
        entry = self.metadata.get("targets")
        if not entry:
            raise ConfigError(f"knowledge cache {self.folder} has no distillation targets yet: finish the build")
        handle = self._open(entry["file"])
        if class_indices is None:
            return handle.get_tensor(TARGETS_KEY).to(device)
        return self._read_rows(handle, TARGETS_KEY, self._rows(class_indices), None).to(device)

    def verify(self) -> None:
        """Check every file's sha256 against metadata.json (reads all data; ConfigError naming a bad file)."""
        entries = [self._entries[i] for i in sorted(self._entries)]
        if self.metadata.get("targets"):
            entries.append(self.metadata["targets"])
        for entry in entries:
            path = os.path.join(self.folder, entry["file"])
            if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                raise ConfigError(f"knowledge cache file {path} is corrupt (sha256 differs from metadata.json): "
                                  "rebuild the cache")

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

    def _open(self, file: str):
        from safetensors import safe_open

        if file not in self._files:  # memory-mapped: the OS pages in only what is read
            self._files[file] = safe_open(os.path.join(self.folder, file), framework="pt", device="cpu")
        return self._files[file]

    def _mask(self, template_index: int, entry: Mapping[str, Any]) -> torch.Tensor:
        if template_index not in self._masks:  # small ([classes, seq] int8): kept in memory
            self._masks[template_index] = self._open(entry["file"]).get_tensor(MASK_KEY)
        return self._masks[template_index]

    @staticmethod
    def _read_rows(handle, name: str, rows: torch.Tensor, seq_start: int | None) -> torch.Tensor:
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
            return torch.empty(shape, dtype=_dtype_of(view.get_dtype()))
        return torch.cat(parts)[inverse]


def _first_token_column(mask: torch.Tensor) -> int:
    """The first column that holds a real token in any row of ``mask`` ``[n, seq]`` (0 if none does).

    Not ``seq - max(lengths)``: with a gap in the middle, a row's tokens span
    more columns than it has tokens.
    """
    real = mask.bool().any(0).nonzero()
    return int(real[0]) if len(real) else 0


def _dtype_of(name: str) -> torch.dtype:
    return {v: k for k, v in _SAFETENSORS_DTYPES.items()}[name]


def cache_size_bytes(num_classes: int, num_templates: int, seq_len: int, num_layers: int, kv_heads: int,
                     head_dim: int, bytes_per_value: int = 2) -> int:
    """Bytes of the keys/values of a cache (masks, targets and headers are negligible)."""
    return num_classes * num_templates * seq_len * num_layers * 2 * kv_heads * head_dim * bytes_per_value


__all__ = [
    "BUILD_COMMAND_HINT", "CACHE_FOLDER", "CacheWriter", "CachedKV", "DESCRIPTIONS_FILE", "default_cache_folder",
    "FORMAT", "FORMAT_VERSION", "KnowledgeCache", "METADATA_FILE", "TARGETS_FILE", "cache_size_bytes",
    "dtype_name", "file_sha256", "key_name", "kv_file_name", "read_metadata", "read_safetensors_header",
    "save_tensors_atomic", "value_name",
]
