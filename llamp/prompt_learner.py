"""The frame every prompt learner here is built in: frozen CLIP's two towers, and CLIP's own way of scoring.

:class:`PromptLearner` freezes CLIP and wraps its towers with their injection
points (``llamp.prompted_clip``); a method adds what it learns and its class
prompts (``llamp.class_prompts``) as ``self.prompts``. LLaMP, which learns
its temperature, builds on it directly. :class:`CLIPScoredPromptLearner` adds
what CoOp, CoCoOp, KgCoOp, MaPLe and PromptSRC share: logits are CLIP's
frozen temperature times the cosine of image and class features, and the
loss is cross-entropy unless a method adds terms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from .errors import ConfigError
from .prompted_clip import Injection, PromptedTextEncoder, PromptedVisionEncoder, lora_disabled


class PromptLearner(nn.Module):
    """Frozen CLIP's text and vision towers; a subclass sets ``self.prompts`` and adds what it learns."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        clip.requires_grad_(False)
        # Only the towers are registered (not CLIPModel itself, whose 0-d logit_scale DeepSpeed cannot broadcast).
        self.text_encoder = PromptedTextEncoder(clip)
        self.vision_encoder = PromptedVisionEncoder(clip)

    @property
    def classnames(self) -> list[str]:
        return self.prompts.classnames

    def encode_prompts(self, token_embeds: torch.Tensor,
                       injections: dict[int, list[Injection]] | None = None) -> torch.Tensor:
        """Projected features ``[C, embed]`` of the class prompts (``self.prompts``) from their layer-0 token
        embeddings ``[C, seq, width]`` and the vectors injected as they enter deeper layers, read at <EOT>."""
        prompts = self.prompts
        return self.text_encoder(token_embeds, prompts.eos_positions, injections, prompts.position_ids)

    @torch.no_grad()
    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP's image features ``[B, embed]`` (not normalised): the vision tower without prompts,
        any LoRA adapters bypassed."""
        with lora_disabled(self.vision_encoder):
            return self.vision_encoder(images)


class CLIPScoredPromptLearner(PromptLearner):
    """Scored as CLIP scores: ``forward(images) -> logits [B, C]``; ``losses(images, labels) -> ({"ce"}, logits)``.

    A subclass writes ``text_features()`` ``[C, embed]`` and ``image_features(images)`` ``[B, embed]``.
    """

    def __init__(self, clip: CLIPModel):
        super().__init__(clip)
        # exp of CLIP's (frozen) logit scale; a float buffer, so half precision never rounds it (never in a checkpoint)
        self.register_buffer("logit_scale", clip.logit_scale.detach().float().exp().reshape(()), persistent=False)

    def text_features(self) -> torch.Tensor:
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``scale * cos`` ``[B, C]``: normalised ``image [B, e]`` against normalised ``text [C, e]``
        (or ``[B, C, e]``: each image against its own text features)."""
        if text.dim() == 3:
            return self.logit_scale * torch.einsum("be,bce->bc", image, text)
        return self.logit_scale * image @ text.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_features(images).float(), dim=-1)  # [B, embed]
        text = F.normalize(self.text_features().float(), dim=-1)  # [C, embed]
        return self.logits(image, text)

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self(images)
        return {"ce": F.cross_entropy(logits, labels)}, logits


def check_depth(depth: int, layers: int, field: str, minimum: int = 1) -> None:
    """A prompt depth (the config field ``field``) must lie in ``minimum .. layers`` (the tower's layers)."""
    if not minimum <= depth <= layers:
        raise ConfigError(f"{{{field}}} {depth} must be in {minimum}..{layers} (the tower's number of layers)",
                          fields=(field,))
