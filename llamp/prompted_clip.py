"""CLIP's two towers with explicit prompt injection points.

One implementation serves every prompt-learning method here. The text tower
takes token embeddings (in which some positions may already hold learned
vectors), adds the position embeddings of explicit per-token position ids, and
at chosen layers, layer 0 included, replaces chosen positions with new vectors
(deep prompting, MaPLe-style). A method thus chooses per token whether a
learned vector gets a position embedding added (put it in the token
embeddings) or carries its own (inject it at layer 0). The vision tower appends learned tokens after the
patch tokens and replaces them at chosen layers (VPT-style). The CLIP weights
themselves are used as they are: these modules hold references, not copies.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn
from transformers import CLIPModel

# One injection: (positions [batch, n] long, vectors [batch, n, width]).
Injection = tuple[torch.Tensor, torch.Tensor]


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive mask ``[1, 1, length, length]``: each token sees itself and the tokens before it."""
    mask = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device)
    return mask.triu(1)[None, None]


def replace_positions(hidden: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``hidden`` with ``hidden[b, positions[b, j]] = vectors[b, j]`` (out of place, differentiable)."""
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.scatter(1, index, vectors.to(hidden.dtype))


class _QuickGELUSavingInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(1.702 * x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(1.702 * x)
        return grad * (s + 1.702 * x * s * (1 - s))


class LeanQuickGELU(nn.Module):
    """CLIP's activation ``x * sigmoid(1.702 x)``, keeping only ``x`` for the backward.

    Autograd would also keep the sigmoid, one more tensor of the MLP's width per
    layer (what that saves at real widths: README, Performance); it is
    recomputed in the backward instead, an elementwise pass. Same forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _QuickGELUSavingInput.apply(x)
        return x * torch.sigmoid(1.702 * x)


def use_lean_activations(layers: nn.ModuleList) -> None:
    """Swap each CLIP layer's QuickGELU for :class:`LeanQuickGELU` (other activations are left as they are)."""
    from transformers.activations import QuickGELUActivation

    for layer in layers:
        if isinstance(layer.mlp.activation_fn, QuickGELUActivation):
            layer.mlp.activation_fn = LeanQuickGELU()


class PromptedTextEncoder(nn.Module):
    """CLIP's text transformer with per-layer replacement of token positions."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.embeddings = clip.text_model.embeddings
        self.layers = clip.text_model.encoder.layers
        use_lean_activations(self.layers)
        self.final_layer_norm = clip.text_model.final_layer_norm
        self.text_projection = clip.text_projection

    @property
    def width(self) -> int:
        return self.final_layer_norm.normalized_shape[0]

    def token_embedding(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[batch, seq, width]``, without positions."""
        return self.embeddings.token_embedding(input_ids)

    def sentence_features(self, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
        """Projected features ``[batch, embed]`` of plain token ids ``[batch, seq]`` (no prompts), read at
        the first end-of-text token (padding may repeat it)."""
        eos = (input_ids == eos_token_id).int().argmax(-1)
        return self(self.token_embedding(input_ids), eos)

    def forward(self, token_embeds: torch.Tensor, eos_positions: torch.Tensor,
                injections: dict[int, Sequence[Injection]] | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Projected features ``[batch, embed]`` read at ``eos_positions``.

        ``token_embeds``: ``[batch, seq, width]`` layer-0 token embeddings, to which
        the position embeddings of ``position_ids`` (``[seq]`` or ``[batch, seq]``;
        default ``0 .. seq-1``) are added here. ``injections[i]``: replacements
        applied to the hidden states entering layer ``i``; at layer 0 they come
        after the position embeddings, so a replacing vector carries whatever
        position information it has itself (none, or its own).
        """
        injections = injections or {}
        seq = token_embeds.shape[1]
        if position_ids is None:
            position_ids = self.embeddings.position_ids[:, :seq]
        hidden = token_embeds + self.embeddings.position_embedding(position_ids)  # [batch, seq, width]
        mask = causal_mask(seq, hidden.dtype, hidden.device)
        for i, layer in enumerate(self.layers):
            for index, vectors in injections.get(i, ()):
                hidden = replace_positions(hidden, index, vectors)
            hidden = layer(hidden, mask)
        hidden = self.final_layer_norm(hidden)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_positions]  # [batch, width]
        return self.text_projection(pooled)


class PromptedVisionEncoder(nn.Module):
    """CLIP's vision transformer with learned tokens after the patch tokens."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        vision = clip.vision_model
        self.embeddings = vision.embeddings
        self.pre_layrnorm = vision.pre_layrnorm
        self.layers = vision.encoder.layers
        use_lean_activations(self.layers)
        self.post_layernorm = vision.post_layernorm
        self.visual_projection = clip.visual_projection

    @property
    def width(self) -> int:
        return self.post_layernorm.normalized_shape[0]

    def forward(self, pixel_values: torch.Tensor, prompts: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Projected features ``[batch, embed]`` from the class token.

        ``prompts[0]`` (``[n, width]`` or ``[batch, n, width]``) is appended to the
        embedded patches before the pre-norm; ``prompts[i]`` replaces those n
        tokens before layer ``i``. After the last given depth the tokens flow on.
        No prompts: exactly CLIP's vision tower.
        """
        dtype = self.embeddings.patch_embedding.weight.dtype
        hidden = self.embeddings(pixel_values.to(dtype))  # [batch, 1 + patches, width]
        batch, n_tokens = hidden.shape[0], hidden.shape[1]
        expand = [p if p.dim() == 3 else p.unsqueeze(0).expand(batch, -1, -1) for p in prompts]
        if expand:
            hidden = torch.cat([hidden, expand[0].to(hidden.dtype)], dim=1)
        hidden = self.pre_layrnorm(hidden)
        for i, layer in enumerate(self.layers):
            if 0 < i < len(expand):
                hidden = torch.cat([hidden[:, :n_tokens], expand[i].to(hidden.dtype)], dim=1)
            hidden = layer(hidden, None)
        pooled = self.post_layernorm(hidden[:, 0])  # [batch, width]
        return self.visual_projection(pooled)


def add_vision_lora(clip: CLIPModel, layers: Sequence[int], rank: int, alpha: float,
                    dropout: float, targets: Sequence[str] = ("q_proj", "v_proj")) -> list[str]:
    """Inject LoRA adapters (peft) into the attention projections of the given vision layers.

    ``lora_B`` starts at zero, so the tower computes exactly what it did before.
    Returns the names of the adapted modules.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = [f"encoder.layers.{i}.self_attn.{t}" for i in layers for t in targets]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names)
    inject_adapter_in_model(config, clip.vision_model)
    return names


@contextlib.contextmanager
def lora_disabled(module: nn.Module) -> Iterator[None]:
    """Within the block, every peft adapter inside ``module`` is bypassed (the base weights act alone)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    previous = [m.disable_adapters for m in layers]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, was in zip(layers, previous):
            m._disable_adapters = was
