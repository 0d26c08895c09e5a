"""The tail of an LLM that the prompt decoder copies: its last decoder layers, final norm and rotary embedding.

Only those tensors are read from the checkpoint's safetensors shards
(``llamp.llm.weights``); the rest of the (7B-parameter) model is never loaded.
The layers are built from the model's own classes (on the meta device, then
filled), so whatever a family's layer does inside (biases, norms,
soft-capping) is its own code. A family whose layers cannot be driven from
outside as the decoder drives them is refused by name, at build and at
training (:func:`decoder_stack`). Tested families: ``TESTED_FAMILIES``
(tests/test_llm_families.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from ..errors import ConfigError
from .identity import LLM_PATH, llm_identity, load_llm_config, resolve_llm_folder
from .weights import layer_sha256, layer_tensor_names, read_tensors, stack_prefix, weight_files

# model_type values whose tiny random models go through build, decoder and training in the tests.
TESTED_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2")
FULL_ATTENTION, SLIDING_ATTENTION = "full_attention", "sliding_attention"


@dataclass
class DecoderTail:
    """The last decoder layers of an LLM, its final norm and rotary embedding, with its config.

    ``layer_sha256``: the weight digest of each kept layer (by index in the LLM).
    """

    config: PretrainedConfig
    layer_indices: list[int]
    layers: nn.ModuleList
    norm: nn.Module
    rotary_emb: nn.Module
    source: str  # the LLM's folder
    layer_sha256: dict[int, str]

    def identity(self) -> dict:
        """The LLM's identity (:func:`llamp.llm.identity.llm_identity`) with the digests of these layers."""
        return llm_identity(self.source, self.layer_sha256)


def load_decoder_tail(path: str, num_layers: int, attn_implementation: str = "sdpa") -> DecoderTail:
    """Read the last ``num_layers`` decoder layers and the final norm of the LLM at ``path`` (fp32)."""
    folder = resolve_llm_folder(path)
    config = load_llm_config(folder)
    total = config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ConfigError(f"{{num_layers}} {num_layers} must be in 1..{total} for {folder}", fields=("num_layers",))
    kept = list(range(total - num_layers, total))

    files = weight_files(folder)
    prefix = stack_prefix(list(files), total - 1)
    wanted = {f"{prefix}norm.weight": "norm.weight"}
    per_layer = {i: layer_tensor_names(files, prefix, i) for i in kept}
    for j, i in enumerate(kept):
        wanted.update({name: f"layers.{j}.{inner}" for name, inner in per_layer[i].items()})

    stack = decoder_stack(config, attn_implementation)  # an unusable family fails before any weights are read
    tail = nn.Module()
    tail.layers = nn.ModuleList([stack.layers[i] for i in kept])
    tail.norm = stack.norm
    tail.to_empty(device="cpu")
    expected = set(tail.state_dict())
    missing = sorted(expected - set(wanted.values()))
    if missing:
        raise ConfigError(f"the LLM checkpoint in {folder} ({{llm_path}}) lacks tensors needed for the "
                          f"last {num_layers} decoder layers, e.g. {missing[:3]}", fields=(LLM_PATH,))
    stored = read_tensors(files, wanted)
    digests = {i: layer_sha256({inner: stored[name] for name, inner in per_layer[i].items()}) for i in kept}
    tail.load_state_dict({wanted[name]: tensor.float() for name, tensor in stored.items()}, strict=True)
    rotary = type(stack.rotary_emb)(config=config)  # buffers computed on CPU, not on meta
    return DecoderTail(config, kept, tail.layers, tail.norm, rotary, folder, digests)


def layer_windows(config: PretrainedConfig) -> list[int | None]:
    """Per decoder layer of the LLM: its sliding-window length, or None where it attends to everything.

    Mistral slides in every layer when ``sliding_window`` is set; configs with
    ``layer_types`` (Qwen2, Gemma-2, ...) say it per layer. Any other layer type
    (chunked attention, ...) is refused by name.
    """
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:
        return [window] * config.num_hidden_layers
    unknown = sorted(set(types) - {FULL_ATTENTION, SLIDING_ATTENTION})
    if unknown:
        raise ConfigError(f"{config.model_type} LLMs are not supported by the prompt decoder ({{llm_path}}): "
                          f"layer types {unknown} (only full and sliding-window attention are)", fields=(LLM_PATH,))
    return [window if t == SLIDING_ATTENTION else None for t in types]


def check_supported(config: PretrainedConfig, stack: nn.Module) -> None:
    """One ConfigError line naming the family if its decoder layers cannot be driven from outside as ours are.

    The decoder calls a layer with hidden states, an additive mask, positions,
    the rotary ``(cos, sin)`` and a K/V cache, and trains q/o projections: a
    layer without separate q/k/v/o projections, a model without one rotary
    embedding and final norm, or a rotary embedding that differs per layer type
    cannot be used that way.
    """
    family = getattr(config, "model_type", type(config).__name__)
    problems = []
    layers = getattr(stack, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not layers:
        problems.append(f"its decoder stack {type(stack).__name__} has no list of layers named 'layers'")
    else:
        layer = layers[0]  # every layer of a stack is built from the same class
        attention = getattr(layer, "self_attn", None)
        missing = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj")
                   if not isinstance(getattr(attention, n, None), nn.Module)]
        if attention is None:
            problems.append(f"its layer {type(layer).__name__} has no self_attn")
        elif missing:
            problems.append(f"its attention {type(attention).__name__} has no separate {'/'.join(missing)}")
        if not isinstance(getattr(layer, "mlp", None), nn.Module):
            problems.append(f"{type(layer).__name__} has no mlp")
    for name in ("norm", "rotary_emb"):
        if not isinstance(getattr(stack, name, None), nn.Module):
            problems.append(f"the model has no single {name}")
    rotary = getattr(stack, "rotary_emb", None)
    if rotary is not None and "layer_type" in inspect.signature(rotary.forward).parameters:
        problems.append("its rotary embedding differs per layer type")
    if problems:
        raise ConfigError(f"{family} LLMs are not supported by the prompt decoder ({{llm_path}}): "
                          f"{'; '.join(problems)} (tested: {', '.join(TESTED_FAMILIES)})", fields=(LLM_PATH,))


def attention_implementation(config: PretrainedConfig, wanted: str) -> str:
    """``wanted`` if the family's model class supports it; sdpa falls back to eager (Gemma-2: soft-capping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ConfigError(f"{getattr(config, 'model_type', type(config).__name__)} ({{llm_path}}) is not a "
                          "causal language model known to transformers", fields=(LLM_PATH,)) from None
    if wanted == "sdpa" and not getattr(model_class, "_supports_sdpa", False):
        return "eager"
    return wanted


def decoder_stack(config: PretrainedConfig, attn_implementation: str = "sdpa") -> nn.Module:
    """The LLM's decoder stack built on the meta device (no memory, no weights), checked by
    :func:`check_supported` and :func:`layer_windows`: a family the prompt decoder cannot drive fails here."""
    attn_implementation = attention_implementation(config, attn_implementation)
    with torch.device("meta"):  # the architecture without allocating it
        skeleton = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    stack = skeleton.get_decoder()
    check_supported(config, stack)
    layer_windows(config)
    return stack
