"""The LLM prompt decoder: learned tokens decoded by the LLM's last layers over a class's cached K/V.

Only the last N decoder layers and the final norm of the LLM are needed, so
only those tensors are read from the checkpoint's safetensors shards
(``llamp.llm_weights``); the rest of the (7B-parameter) model is never loaded. The layers are built from
the model's own classes (on the meta device, then filled), so whatever a
family's layer does inside (biases, norms, soft-capping) is its own code.
What the decoder must supply from outside is the attention mask, the
positions and the rotary embedding: the mask honours each layer's sliding
window (Mistral; Gemma-2's alternating layers), and families whose layers
need anything else are refused by name (:func:`check_supported`). Tested
families: ``TESTED_FAMILIES`` (tests/test_llm_families.py).
"""
from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig

from .errors import ConfigError
from .llm_identity import LLM_PATH_KEY, load_llm_config, resolve_llm_folder
from .llm_weights import layer_sha256, layer_tensor_names, read_tensors, stack_prefix, weight_files

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
    source: str
    layer_sha256: dict[int, str]


def load_decoder_tail(path: str, num_layers: int, attn_implementation: str = "sdpa") -> DecoderTail:
    """Read the last ``num_layers`` decoder layers and the final norm of the LLM at ``path`` (fp32)."""
    folder = resolve_llm_folder(path)
    config = load_llm_config(folder)
    total = config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ConfigError(f"TRAINER.LLAMP.NUM_DECODER_LAYERS {num_layers} must be in 1..{total} for {folder}")
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
        raise ConfigError(f"the LLM checkpoint in {folder} ({LLM_PATH_KEY}) lacks tensors needed for the "
                          f"last {num_layers} decoder layers, e.g. {missing[:3]}")
    stored = read_tensors(files, wanted)
    digests = {i: layer_sha256({inner: stored[name] for name, inner in per_layer[i].items()}) for i in kept}
    tail.load_state_dict({wanted[name]: tensor.float() for name, tensor in stored.items()}, strict=True)
    rotary = type(stack.rotary_emb)(config=config)  # buffers computed on CPU, not on meta
    return DecoderTail(config, kept, tail.layers, tail.norm, rotary, folder, digests)


def cache_attention_mask(cache_mask: torch.Tensor, num_new: int, dtype: torch.dtype,
                         window: int | None = None) -> torch.Tensor:
    """Additive mask ``[batch, 1, new, cached + new]`` for new tokens after a padded cache.

    New tokens see every real cached token (wherever padding sits: on the left
    or in a gap), themselves and the new tokens before them. With a sliding
    ``window``, a token at position p sees only positions > p - window, as the
    LLM's own layer does over an unpadded sequence (positions, not slots, so
    padding does not narrow the window).
    """
    real = cache_mask.bool()  # [batch, seq]
    cached_positions = cache_mask.long().cumsum(-1) - 1  # [batch, seq] (meaningless on padding: masked)
    steps = torch.arange(num_new, device=cache_mask.device)
    new_positions = cache_mask.long().sum(-1, keepdim=True) + steps  # [batch, new]
    sees_cached = real[:, None, :].expand(-1, num_new, -1)  # [batch, new, seq]
    sees_new = (steps[:, None] >= steps[None, :])[None].expand(real.shape[0], -1, -1)  # [batch, new, new]
    if window is not None:
        sees_cached = sees_cached & (new_positions[:, :, None] - cached_positions[:, None, :] < window)
        sees_new = sees_new & (steps[:, None] - steps[None, :] < window)[None]
    visible = torch.cat([sees_cached, sees_new], dim=-1)[:, None]  # [batch, 1, new, seq + new]
    return torch.zeros(visible.shape, dtype=dtype, device=cache_mask.device).masked_fill(
        ~visible, torch.finfo(dtype).min)


def layer_windows(config: PretrainedConfig, label: str = LLM_PATH_KEY) -> list[int | None]:
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
        raise ConfigError(f"{config.model_type} LLMs are not supported by the prompt decoder ({label}): "
                          f"layer types {unknown} (only full and sliding-window attention are)")
    return [window if t == SLIDING_ATTENTION else None for t in types]


def check_supported(config: PretrainedConfig, stack: nn.Module, label: str = LLM_PATH_KEY) -> None:
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
        raise ConfigError(f"{family} LLMs are not supported by the prompt decoder ({label}): "
                          f"{'; '.join(problems)} (tested: {', '.join(TESTED_FAMILIES)})")


def attention_implementation(config: PretrainedConfig, wanted: str, label: str = LLM_PATH_KEY) -> str:
    """``wanted`` if the family's model class supports it; sdpa falls back to eager (Gemma-2: soft-capping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ConfigError(f"{getattr(config, 'model_type', type(config).__name__)} ({label}) is not a "
                          "causal language model known to transformers") from None
    if wanted == "sdpa" and not getattr(model_class, "_supports_sdpa", False):
        return "eager"
    return wanted


def decoder_stack(config: PretrainedConfig, attn_implementation: str = "sdpa",
                  label: str = LLM_PATH_KEY) -> nn.Module:
    """The LLM's decoder stack built on the meta device (no memory, no weights), checked by
    :func:`check_supported` and :func:`layer_windows`: a family the prompt decoder cannot drive fails here."""
    attn_implementation = attention_implementation(config, attn_implementation, label)
    with torch.device("meta"):  # the architecture without allocating it
        skeleton = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    stack = skeleton.get_decoder()
    check_supported(config, stack, label)
    layer_windows(config, label)
    return stack


CACHE_KEYWORDS = ("cache", "past_key_values", "past_key_value")  # newest first, as transformers renamed it


def cache_keyword(layer: nn.Module) -> str:
    """The keyword under which ``layer.forward`` declares its K/V cache in the installed transformers.

    Decoder layers swallow unknown keywords (``**kwargs``): a cache passed under a
    name the installed version does not declare is silently ignored, and the
    learned tokens would attend to nothing cached. So the name is looked up.
    """
    declared = inspect.signature(layer.forward).parameters
    for name in CACHE_KEYWORDS:
        if name in declared:
            return name
    import transformers

    raise ConfigError(f"{type(layer).__name__}.forward (transformers {transformers.__version__}) declares no cache "
                      f"argument ({' / '.join(CACHE_KEYWORDS)}): this LLM's decoder layers cannot attend to a "
                      "knowledge cache")


class LLMPromptDecoder(nn.Module):
    """M learned tokens in LLM hidden space, decoded over each class's cached keys/values.

    The tokens sit right after the cached text (positions continue from its
    number of real tokens, which is right for a cache with a masked gap too:
    its positions count real tokens only), pass through copies of the LLM's
    last N layers, each attending to its own layer's cache, then through a
    copy of the final norm.

    The first copied layer gets the same M tokens for every class, so its q/k/v
    projections would compute the same rows C times (a quarter of a LLaMA
    layer's multiply-adds per token). They are computed once and broadcast
    (:class:`SharedRowProjections`): only attention and what follows it differ per class.
    """

    def __init__(self, tail: DecoderTail, num_tokens: int, train_q: bool = True, train_o: bool = True,
                 train_kv: bool = False, train_mlp: bool = False, train_layer_norms: bool = True,
                 train_final_norm: bool = True):
        super().__init__()
        self.config = tail.config
        self.layer_indices = list(tail.layer_indices)
        self.layers = tail.layers
        self.norm = tail.norm
        self.rotary_emb = tail.rotary_emb
        hidden = tail.config.hidden_size
        self.tokens = nn.Parameter(torch.empty(num_tokens, hidden))
        nn.init.kaiming_uniform_(self.tokens, a=math.sqrt(5))

        self.requires_grad_(False)
        self.tokens.requires_grad_(True)
        trainable = {"q_proj": train_q, "o_proj": train_o, "k_proj": train_kv, "v_proj": train_kv}
        for layer in self.layers:
            for name, flag in trainable.items():
                getattr(layer.self_attn, name).requires_grad_(flag)
            layer.mlp.requires_grad_(train_mlp)
            for name, module in layer.named_children():
                if "norm" in name:
                    module.requires_grad_(train_layer_norms)
        self.norm.requires_grad_(train_final_norm)
        self.cache_keywords = [cache_keyword(layer) for layer in self.layers]
        windows = layer_windows(tail.config)
        self.windows = [windows[i] for i in self.layer_indices]  # each copied layer's sliding window (or None)
        attention = self.layers[0].self_attn
        self.shared_projections = SharedRowProjections([attention.q_proj, attention.k_proj, attention.v_proj])

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    def forward(self, keys: list[torch.Tensor], values: list[torch.Tensor], cache_mask: torch.Tensor) -> torch.Tensor:
        """Decoded tokens ``[batch, M, hidden]``.

        ``keys[j]`` / ``values[j]``: ``[batch, kv_heads, seq, head_dim]`` cached by
        layer ``layer_indices[j]`` (keys after rotary); ``cache_mask``: ``[batch, seq]``,
        1 for real tokens, 0 for padding (on the left or in a gap).
        """
        if len(keys) != len(self.layers) or len(values) != len(self.layers):
            raise ValueError(f"expected K/V for {len(self.layers)} layers, got {len(keys)}")
        batch, m = cache_mask.shape[0], self.num_tokens
        dtype = self.tokens.dtype
        hidden = self.tokens.unsqueeze(0).expand(batch, -1, -1)  # [batch, M, hidden]
        lengths = cache_mask.long().sum(-1, keepdim=True)  # real tokens per row: the last position + 1
        positions = lengths + torch.arange(m, device=hidden.device)  # [batch, M]
        position_embeddings = self.rotary_emb(hidden, positions)
        masks = {w: cache_attention_mask(cache_mask, m, dtype, w) for w in set(self.windows)}
        for j, (layer, keyword, window, k, v) in enumerate(
                zip(self.layers, self.cache_keywords, self.windows, keys, values)):
            # A fresh cache per call: update() appends in place. Built without the config, so no
            # sliding-window layer crops it: the mask applies the window.
            cache = DynamicCache()
            cache.update(k.to(dtype), v.to(dtype), layer.self_attn.layer_idx)
            with self.shared_projections.active(batch if j == 0 else 0):  # rows differ after the first layer
                hidden = layer(hidden, attention_mask=masks[window], position_ids=positions,
                               position_embeddings=position_embeddings, **{keyword: cache})
        return self.norm(hidden)


class SharedRowProjections:
    """Projections that, while :meth:`active`, compute the first row of their input only and broadcast it.

    For inputs whose rows are known to be equal (the first decoder layer's
    learned tokens, the same for every class). Forward hooks keep the family's
    own layer code and the modules' parameter names untouched. The broadcast is
    an ``expand``, so the backward sums the rows' gradients into the one row
    computed: the same gradients as computing every row, at ``1 / rows`` of the cost.
    """

    def __init__(self, modules: list[nn.Module]):
        self.rows = 0  # 0: inactive, the modules compute as usual
        self.enabled = True  # False: always compute every row (the tests compare both)
        for module in modules:
            module.register_forward_pre_hook(self._first_row)
            module.register_forward_hook(self._broadcast)

    @contextlib.contextmanager
    def active(self, rows: int) -> Iterator[None]:
        """Within the block, the modules' inputs have ``rows`` equal rows (0: they may differ)."""
        self.rows = rows if self.enabled else 0
        try:
            yield
        finally:
            self.rows = 0

    def _first_row(self, module: nn.Module, args: tuple):
        if self.rows > 1:
            return (args[0][:1], *args[1:])
        return None

    def _broadcast(self, module: nn.Module, args: tuple, output: torch.Tensor):
        if self.rows > 1:
            return output.expand(self.rows, *output.shape[1:])
        return None
