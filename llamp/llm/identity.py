"""Which LLM: finding it on local disk, reading its config, and the identity a knowledge cache records.

An LLM is named by a model folder, its ``config.json``, or a hub name that is
resolved from the local Hugging Face cache only (nothing is downloaded). Its
identity (:func:`llm_identity`) is what a cache must agree on with the model
that consumes it: shapes, rope settings, a hash of ``config.json`` and, added
by the build, digests of the kept layers' weights (``llamp.llm.weights``).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from transformers import AutoConfig, PretrainedConfig

from ..errors import ConfigError, MissingFileError, from_local_files
from ..json_files import read_json

# The field errors name the LLM's path by (llamp.errors.ConfigError): a trainer's TRAINER.LLAMP.LLM_PATH,
# the build's --llm.
LLM_PATH = "llm_path"
# The LLM fields a cache must agree on with the model that consumes it.
LLM_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim")
# config.json keys that say how a file was saved, not what the model is.
_VOLATILE_CONFIG_KEYS = frozenset({
    "transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype", "use_cache",
    "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
})


def llm_folder_name(llm: str) -> str:
    """A folder-friendly name of an LLM: the last part of its path or hub name."""
    return os.path.basename(os.path.normpath(os.path.expanduser(llm))) or "llm"


# ---------------------------------------------------------------- finding it


def llm_config_path(source: str) -> str:
    """Absolute path of the ``config.json`` of the LLM at ``source`` (folder, ``config.json`` or cached hub name)."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    elif not os.path.isfile(path):
        path = _hub_cache_file(source, "config.json")
        if path is None:
            raise MissingFileError(
                f"LLM {source!r} is neither a folder nor a hub name in the local Hugging Face cache "
                "(nothing is downloaded)")
    if not os.path.isfile(path):
        raise MissingFileError(f"LLM folder {os.path.dirname(path)} has no config.json")
    return os.path.abspath(path)


def _hub_cache_file(name: str, file_name: str) -> str | None:
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") != 1:
        return None
    from transformers.utils import cached_file

    try:
        return cached_file(name, file_name, local_files_only=True,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None


def resolve_llm_folder(source: str) -> str:
    """The local folder of the LLM at ``source``."""
    if not source:
        raise ConfigError("{llm_path} is empty: set it to the LLM's Hugging Face folder", fields=(LLM_PATH,))
    try:
        return os.path.dirname(llm_config_path(source))
    except MissingFileError as e:
        raise MissingFileError(f"{{llm_path}}: {e}", fields=(LLM_PATH,)) from None


# ---------------------------------------------------------------- its config


def read_llm_config_json(source: str) -> dict:
    """The raw ``config.json`` of the LLM at ``source`` (folder, the file itself, or cached hub name)."""
    path = llm_config_path(source)
    config = read_json(path).content
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a model config (expected a JSON object)")
    return config


def load_llm_config(folder: str) -> PretrainedConfig:
    """The LLM's transformers config from its local ``folder``."""
    return from_local_files(AutoConfig, folder, f"cannot read the LLM config in {folder} ({{llm_path}})",
                            fields=(LLM_PATH,))


# ---------------------------------------------------------------- its identity


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of a raw config.json's content, canonicalised.

    Keys sorted, no whitespace, and keys that only record how the file was
    saved (``transformers_version``, ``dtype``, ...) dropped, so re-saving a
    model with another library version keeps its identity.
    """
    def clean(d: Mapping[str, Any]) -> dict:
        return {k: clean(v) if isinstance(v, Mapping) else v
                for k, v in d.items() if k not in _VOLATILE_CONFIG_KEYS}

    text = json.dumps(clean(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def llm_identity(source: str, layer_sha256: Mapping[int, str] | None = None) -> dict:
    """What identifies an LLM for a knowledge cache: its shapes, rope settings, a hash of its ``config.json``
    and the weight digests of the decoder layers a cache keeps (``layer_sha256``, by layer index;
    ``llamp.llm.weights``). The one identity the cache build records and training checks (fine-tunes share
    shapes and config, so the layers' digests tell them apart).

    ``source``: the LLM's folder, its ``config.json`` or a hub name in the local cache.
    """
    raw = read_llm_config_json(source)
    fields = raw
    if "hidden_size" not in fields and isinstance(fields.get("text_config"), Mapping):
        fields = fields["text_config"]  # multimodal chat models keep the LLM's config here
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads") if k not in fields]
    if missing:
        raise ConfigError(f"LLM config of {source} lacks {', '.join(missing)}: not a decoder-only transformer config")
    heads = int(fields["num_attention_heads"])
    head_dim = fields.get("head_dim") or int(fields["hidden_size"]) // heads
    identity = {
        "source": source,
        "model_type": fields.get("model_type"),
        "hidden_size": int(fields["hidden_size"]),
        "num_hidden_layers": int(fields["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get("num_key_value_heads") or heads),
        "head_dim": int(head_dim),
        "rope": _rope_settings(fields),
        "config_sha256": config_sha256(raw),
    }
    if layer_sha256 is not None:
        identity["layer_sha256"] = {str(i): digest for i, digest in layer_sha256.items()}
    return identity


def _rope_settings(fields: Mapping[str, Any]) -> dict:
    """Rope theta and type, whichever way the config spells them (v5 ``rope_parameters`` or older keys)."""
    params = fields.get("rope_parameters")
    scaling = fields.get("rope_scaling")
    theta = fields.get("rope_theta")
    rope_type = None
    if isinstance(params, Mapping):
        theta = params.get("rope_theta", theta)
        rope_type = params.get("rope_type")
    if isinstance(scaling, Mapping):
        rope_type = rope_type or scaling.get("rope_type") or scaling.get("type")
    return {"rope_theta": theta, "rope_type": rope_type or "default",
            "parameters": params if params is not None else scaling}


def compare_llm_identity(cached: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """The first difference between two identities, in words (``None`` if they agree)."""
    for field in LLM_SHAPE_FIELDS:
        if cached.get(field) != expected.get(field):
            return f"{field} is {cached.get(field)} in the cache but {expected.get(field)} in the expected LLM"
    ours, theirs = cached.get("rope") or {}, expected.get("rope") or {}
    for field in ("rope_theta", "rope_type"):
        a, b = ours.get(field), theirs.get(field)
        if a is not None and b is not None and a != b:
            return f"rope {field} is {a} in the cache but {b} in the expected LLM"
    a, b = cached.get("config_sha256"), expected.get("config_sha256")
    if a and b and a != b:
        return f"config.json differs (sha256 {a[:12]}... in the cache, {b[:12]}... expected)"
    ours, theirs = cached.get("layer_sha256") or {}, expected.get("layer_sha256") or {}
    for layer in sorted(set(ours) & set(theirs), key=int):
        if ours[layer] != theirs[layer]:
            return (f"the weights of decoder layer {layer} differ (sha256 {ours[layer][:12]}... in the cache, "
                    f"{theirs[layer][:12]}... expected)")
    return None
