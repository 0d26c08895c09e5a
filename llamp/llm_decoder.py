"""The LLM prompt decoder: learned tokens decoded by the LLM's last layers over a class's cached K/V.

The layers, final norm and rotary embedding are the LLM's own (``llamp.llm.tail``
reads them); what the decoder supplies from outside is the attention mask, the
positions and the rotary embedding: the mask honours each layer's sliding
window (Mistral; Gemma-2's alternating layers).
"""
from __future__ import annotations

import contextlib
import inspect
import math
from typing import Iterator

import torch
from torch import nn
from transformers import DynamicCache

from .cache_kv import CacheKV, positions_from_mask
from .errors import ConfigError
from .llm.tail import DecoderTail, layer_windows

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
    cached_positions = positions_from_mask(cache_mask)  # [batch, seq] (meaningless on padding: masked)
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

    def forward(self, kv: CacheKV) -> torch.Tensor:
        """Decoded tokens ``[batch, M, hidden]`` over ``kv``, the cache rows of ``batch`` classes
        (``kv.keys[j]`` / ``kv.values[j]`` cached by layer ``layer_indices[j]``)."""
        if len(kv.keys) != len(self.layers) or len(kv.values) != len(self.layers):
            raise ValueError(f"expected K/V for {len(self.layers)} layers, got {len(kv.keys)}")
        cache_mask = kv.mask
        batch, m = cache_mask.shape[0], self.num_tokens
        dtype = self.tokens.dtype
        # the cached rows join the new tokens' keys/values in the dtype attention computes in: under autocast
        # (bf16 rows, fp32 trained tokens) no fp32 copy of the rows is made
        device_type = self.tokens.device.type
        kv_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else dtype
        hidden = self.tokens.unsqueeze(0).expand(batch, -1, -1)  # [batch, M, hidden]
        lengths = cache_mask.long().sum(-1, keepdim=True)  # real tokens per row: the last position + 1
        positions = lengths + torch.arange(m, device=hidden.device)  # [batch, M]
        position_embeddings = self.rotary_emb(hidden, positions)
        masks = {w: cache_attention_mask(cache_mask, m, dtype, w) for w in set(self.windows)}
        for j, (layer, keyword, window, k, v) in enumerate(
                zip(self.layers, self.cache_keywords, self.windows, kv.keys, kv.values)):
            # A fresh cache per call: update() appends in place. Built without the config, so no
            # sliding-window layer crops it: the mask applies the window.
            cache = DynamicCache()
            cache.update(k.to(kv_dtype), v.to(kv_dtype), layer.self_attn.layer_idx)
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
