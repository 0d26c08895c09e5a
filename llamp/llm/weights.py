"""Reading chosen tensors of an LLM from its safetensors shards, and the weight digests that tie a cache to them.

Training needs the last decoder layers and the final norm of a 7B-parameter
LLM: those tensors are located through ``model.safetensors.index.json`` (or
the single ``model.safetensors``) and read alone. A layer's digest
(:func:`layer_sha256`) records in a knowledge cache which weights computed it:
two fine-tunes of one model share every config field but not these.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Iterable, Mapping, Sequence

import torch

from ..errors import ConfigError, MissingFileError
from .identity import LLM_PATH


def weight_files(folder: str) -> dict[str, str]:
    """Tensor name -> safetensors file holding it."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return {name: os.path.join(folder, file) for name, file in json.load(f)["weight_map"].items()}
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, "pt") as f:
            return {name: single for name in f.keys()}
    raise MissingFileError(f"{folder} ({{llm_path}}) has no model.safetensors[.index.json]: "
                           "the decoder layers are read from safetensors weights", fields=(LLM_PATH,))


def stack_prefix(names: list[str], last_layer: int) -> str:
    """The name prefix of the decoder stack, e.g. 'model.' for 'model.layers.31.*'."""
    pattern = re.compile(rf"^(.*?)layers\.{last_layer}\.")
    for name in names:
        match = pattern.match(name)
        if match:
            return match.group(1)
    raise ConfigError(f"no tensors of decoder layer {last_layer} found in the LLM checkpoint ({{llm_path}})",
                      fields=(LLM_PATH,))


def layer_tensor_names(files: Mapping[str, str], prefix: str, layer: int) -> dict[str, str]:
    """``{checkpoint name: name within the layer}`` of decoder layer ``layer``'s tensors."""
    start = f"{prefix}layers.{layer}."
    return {name: name[len(start):] for name in files if name.startswith(start)}


def read_tensors(files: Mapping[str, str], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The named tensors from the checkpoint's safetensors shards, as stored."""
    from safetensors import safe_open

    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    out = {}
    for file, file_names in by_file.items():
        try:
            with safe_open(file, "pt", device="cpu") as f:
                for name in file_names:
                    out[name] = f.get_tensor(name)
        except Exception as e:
            raise ConfigError(f"cannot read {file} ({{llm_path}}): {type(e).__name__}: {e}",
                              fields=(LLM_PATH,)) from None
    return out


def layer_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of one decoder layer's weights: ``{name within the layer: tensor}``, values as fp32."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(f"{name}:{list(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def llm_layer_sha256(folder: str, layers: Sequence[int]) -> dict[int, str]:
    """:func:`layer_sha256` of the given decoder layers of the LLM in ``folder``, read from its shards."""
    files = weight_files(folder)
    prefix = stack_prefix(list(files), max(layers))
    digests = {}
    for layer in layers:
        names = layer_tensor_names(files, prefix, layer)
        tensors = read_tensors(files, names)
        digests[layer] = layer_sha256({names[n]: t for n, t in tensors.items()})
    return digests
