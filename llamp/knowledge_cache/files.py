"""The knowledge cache's format: file and tensor names, ``metadata.json``, and the default folder.

Each ``kv_tNN.safetensors`` row is one class's token sequence, padded to the
template's longest; the mask says which slots hold real tokens.
``metadata["layout"]`` names how the sequence was built (``llm_prompts.layouts``):
``"release"`` (the default) is ``[pad][prompt][pad][BOS noun phrases]``, so a
row has padding in the middle as well as on the left; ``"contiguous"`` is one
left-padded run. Either way a real token's rotary position is the number of
real tokens before it (``llamp.cache_kv.positions_from_mask``), positions run on across a gap,
and new tokens continue at ``mask.sum()``: a consumer needs only the mask.
Keys are stored after the rotary embedding, as the attention layer caches
them. Padding slots hold zeros and have mask 0. Caches written before the
layout was recorded are contiguous. Class rows follow ``metadata["classnames"]``;
one cache built over all classes serves the base, new and all subsets, since
the reader looks classes up by name.

Tensors live only in safetensors files and everything else in JSON: a cache
never runs code when it is read (no pickle). Every file is written to a temp
name and renamed into place, and ``metadata.json`` lists a file only once it
is complete, so a killed build leaves a readable, resumable folder.
"""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from ..json_files import read_json
from ..llm.identity import llm_folder_name

FORMAT = "llamp-knowledge-cache"
CACHE_FOLDER = "llamp_cache"  # under a dataset's folder, one sub-folder per LLM
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
DESCRIPTIONS_FILE = "descriptions.jsonl"
TARGETS_FILE = "targets.safetensors"
MASK_KEY = "attention_mask"
TARGETS_KEY = "targets"
# The metadata fields that describe a whole cache (the writer's header; the reader requires them).
HEADER_FIELDS = ("dataset", "classnames", "query_templates", "llm", "kept_layers", "dtype")
def build_command(root: str = "DATA", llm: str = "<LLM folder>", clip: str = "<CLIP folder or file>",
                  num_layers: int | None = None) -> str:
    """The command that builds a cache, as errors quote it (what is not known stays a placeholder)."""
    command = (f"python -m llm_prompts build --root {root} --dataset-config-file configs/datasets/<dataset>.yaml "
               f"--llm {llm} --clip {clip}")
    return command + (f" --num-layers {num_layers}" if num_layers and num_layers > 1 else "")
KV_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def read_metadata(folder: str) -> dict | None:
    """``metadata.json`` of a cache folder, or ``None`` if there is none yet."""
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    meta = read_json(path, advice="; delete it and run the build again (descriptions.jsonl keeps the answers)").content
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a LLaMP knowledge cache (no \"format\": \"{FORMAT}\")")
    return meta


def cache_size_bytes(num_classes: int, num_templates: int, seq_len: int, num_layers: int, kv_heads: int,
                     head_dim: int, bytes_per_value: int = 2) -> int:
    """Bytes of the keys/values of a cache (masks, targets and headers are negligible)."""
    return num_classes * num_templates * seq_len * num_layers * 2 * kv_heads * head_dim * bytes_per_value
