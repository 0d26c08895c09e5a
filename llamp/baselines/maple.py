"""MaPLe — Multi-modal Prompt Learning (Khattak et al., CVPR 2023).

What is learned:
  * ``ctx`` ``[n_ctx, text_width]``: the first ``n_ctx`` words of the sentence
    "a photo of a {class}." (initialised from those words' embeddings; the
    remaining words stay fixed text, as in the authors' release);
  * ``deep_ctx`` ``[depth - 1, n_ctx, text_width]``: fresh text prompts that
    replace the context positions before text layers ``1 .. depth - 1``;
  * ``couplings``: one ``Linear(text_width -> vision_width)`` per depth. The
    vision prompts are *not* free parameters: vision prompt ``d`` is
    ``couplings[d](text prompt d)``, so the two towers are tied and any change
    of a text prompt moves the vision prompt of the same depth.

The vision prompts go through ``PromptedVisionEncoder``: the depth-0 ones are
appended after the patch tokens, the deeper ones replace them before vision
layers ``1 .. depth - 1``. Logits are CLIP's (frozen) scale times the cosine
of image and class features; the loss is cross-entropy alone.

Identity-like settings (what the tests pin):
  * ``depth = 1`` and ``ctx`` at its initial value: the text tower computes
    exactly frozen CLIP's features of "a photo of a {class}.".
  * ``deep_ctx[d - 1]`` set to the hidden states frozen CLIP has at the context
    positions entering layer ``d`` (these do not depend on the class, since
    causal attention lets them see only the start token and the context):
    still exactly frozen CLIP's text features.
  * coupling ``d`` with weight ``[I; 0]`` (identity into the first
    ``text_width`` vision channels) and zero bias: vision prompt ``d`` is text
    prompt ``d`` zero-padded to the vision width.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..clip_tokenizer import CONTEXT_LENGTH
from ..errors import ConfigError
from ..prompted_clip import PromptedTextEncoder, PromptedVisionEncoder, replace_positions
from ..templates import class_prompt_name

RANDOM_CONTEXT_WORD = "X"  # placeholder word when the context is not initialised from text
PROMPT_INIT_STD = 0.02  # the releases' init of prompts not taken from words


@dataclass
class MaPLeConfig:
    """MaPLe's hyper-parameters (the trainer fills these from cfg.TRAINER.MAPLE)."""

    n_ctx: int = 2
    ctx_init: str = "a photo of a"  # empty: random context, sentence "X X {class}."
    prompt_depth: int = 9  # J: layers of both towers that receive prompts


@dataclass
class ClassSentences:
    """Token ids of "<prefix> {class}." per class, and where the learned context sits."""

    input_ids: torch.Tensor  # [C, 77]
    eos_positions: torch.Tensor  # [C]
    context_positions: torch.Tensor  # [C, n_ctx]: 1 .. n_ctx, right after the start token
    context_init: torch.Tensor  # [n_ctx, text_width]: word embeddings, or N(0, 0.02) if no init text


def class_sentences(text_encoder: PromptedTextEncoder, tokenizer: CLIPTokenizer, classnames: list[str],
                    n_ctx: int, ctx_init: str, n_ctx_key: str, ctx_init_key: str) -> ClassSentences:
    """The CoOp-style sentences MaPLe and PromptSRC learn on.

    With ``ctx_init`` (e.g. "a photo of a") the sentence is "a photo of a {class}." and
    its first ``n_ctx`` words become the learned context, initialised from their
    embeddings; without, it is "X ... X {class}." with random context vectors.
    ``n_ctx_key`` and ``ctx_init_key`` name the config keys in errors.
    """
    if n_ctx < 1:
        raise ConfigError(f"{n_ctx_key} must be >= 1, got {n_ctx}")
    width = text_encoder.width
    if ctx_init:
        prefix = ctx_init.replace("_", " ")
        words = tokenizer(prefix, add_special_tokens=False).input_ids
        if len(words) < n_ctx:
            raise ConfigError(f"{ctx_init_key} {ctx_init!r} has {len(words)} tokens, fewer than the "
                              f"{n_ctx} context tokens asked for: lengthen it or set it to '' (random init)")
        with torch.no_grad():
            init = text_encoder.token_embedding(torch.tensor(words[:n_ctx])).float().clone()
    else:
        prefix = " ".join([RANDOM_CONTEXT_WORD] * n_ctx)
        init = torch.empty(n_ctx, width).normal_(std=PROMPT_INIT_STD)

    texts = [f"{prefix} {class_prompt_name(c)}." for c in classnames]
    too_long = [c for c, ids in zip(classnames, tokenizer(texts).input_ids) if len(ids) > CONTEXT_LENGTH]
    if too_long:
        raise ConfigError(f"class names too long for CLIP's {CONTEXT_LENGTH} tokens: {too_long[:3]}")
    ids = tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, return_tensors="pt").input_ids
    eos = (ids == tokenizer.eos_token_id).int().argmax(-1)  # first end-of-text token
    positions = torch.arange(1, 1 + n_ctx).expand(len(classnames), -1).contiguous()
    return ClassSentences(ids, eos, positions, init)


def check_depth(depth: int, layers: int, key: str) -> None:
    if not 1 <= depth <= layers:
        raise ConfigError(f"{key} {depth} must be in 1..{layers} (the tower's number of layers)")


class MaPLePromptLearner(nn.Module):
    """Frozen CLIP with MaPLe's coupled text and vision prompts."""

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: MaPLeConfig):
        super().__init__()
        self.config = config
        clip.requires_grad_(False)
        self.text_encoder = PromptedTextEncoder(clip)
        self.vision_encoder = PromptedVisionEncoder(clip)
        depth = config.prompt_depth
        check_depth(depth, min(len(self.text_encoder.layers), len(self.vision_encoder.layers)),
                    "TRAINER.MAPLE.PROMPT_DEPTH")
        text_width, vision_width = self.text_encoder.width, self.vision_encoder.width

        sentences = class_sentences(self.text_encoder, tokenizer, classnames, config.n_ctx, config.ctx_init,
                                    "TRAINER.MAPLE.N_CTX", "TRAINER.MAPLE.CTX_INIT")
        self.ctx = nn.Parameter(sentences.context_init)  # [n_ctx, text_width]
        self.deep_ctx = nn.Parameter(torch.empty(depth - 1, config.n_ctx, text_width).normal_(std=PROMPT_INIT_STD))
        # Depth 0 has its own map; the deeper ones start as copies of one another, as in the release.
        deep_map = nn.Linear(text_width, vision_width)
        self.couplings = nn.ModuleList([nn.Linear(text_width, vision_width)]
                                       + [copy.deepcopy(deep_map) for _ in range(depth - 1)])

        self.classnames = list(classnames)
        self.register_buffer("input_ids", sentences.input_ids, persistent=False)
        self.register_buffer("eos_positions", sentences.eos_positions, persistent=False)
        self.register_buffer("context_positions", sentences.context_positions, persistent=False)
        # CLIP's temperature, frozen (a buffer: never trained, never in a checkpoint)
        self.register_buffer("logit_scale", clip.logit_scale.detach().float().exp().reshape(()), persistent=False)

    # ---- prompts ---------------------------------------------------------
    def text_prompts(self) -> list[torch.Tensor]:
        """Text prompts per depth, each ``[n_ctx, text_width]`` (depth 0 is the context)."""
        return [self.ctx, *self.deep_ctx]

    def vision_prompts(self) -> list[torch.Tensor]:
        """Vision prompts per depth, each ``[n_ctx, vision_width]``: the coupled text prompts."""
        return [couple(p) for couple, p in zip(self.couplings, self.text_prompts())]

    # ---- features --------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """Class features ``[C, embed]`` (not normalised)."""
        n_cls = self.input_ids.shape[0]
        prompts = [p.unsqueeze(0).expand(n_cls, -1, -1) for p in self.text_prompts()]  # each [C, n_ctx, width]
        embeds = self.text_encoder.token_embedding(self.input_ids)  # [C, 77, width]
        embeds = replace_positions(embeds, self.context_positions, prompts[0])
        injections = {d: [(self.context_positions, prompts[d])] for d in range(1, len(prompts))}
        return self.text_encoder(embeds, self.eos_positions, injections)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[batch, embed]`` with the coupled vision prompts (not normalised)."""
        return self.vision_encoder(images, self.vision_prompts())

    # ---- the two calls the trainer makes ----------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, C]``."""
        text = F.normalize(self.text_features().float(), dim=-1)
        image = F.normalize(self.image_features(images).float(), dim=-1)
        return self.logit_scale * image @ text.t()

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self(images)
        return {"ce": F.cross_entropy(logits, labels)}, logits
