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

The class prompts are ``llamp.class_prompts.sentence_context``'s (shared with
PromptSRC). The vision prompts go through ``PromptedVisionEncoder``: the
depth-0 ones are appended after the patch tokens, the deeper ones replace them
before vision layers ``1 .. depth - 1``. Logits are CLIP's (frozen) scale times
the cosine of image and class features; the loss is cross-entropy alone.

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
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..class_prompts import PROMPT_INIT_STD, sentence_context
from ..prompt_learner import CLIPScoredPromptLearner, check_depth


@dataclass
class MaPLeConfig:
    """MaPLe's hyper-parameters (the trainer's TRAINER.MAPLE keys are these fields in capitals, the
    release's key names)."""

    n_ctx: int = 2  # learned context tokens, shared by both towers through the couplings
    # its first n_ctx tokens initialise the context; "" (or n_ctx > 4, the releases' rule): random "X X"
    ctx_init: str = "a photo of a"
    prompt_depth: int = 9  # J: layers of each tower that receive prompts (1 = shallow MaPLe)


class MaPLePromptLearner(CLIPScoredPromptLearner):
    """Frozen CLIP with MaPLe's coupled text and vision prompts."""

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: MaPLeConfig):
        super().__init__(clip)
        self.config = config
        depth = config.prompt_depth
        check_depth(depth, min(len(self.text_encoder.layers), len(self.vision_encoder.layers)),
                    "prompt_depth")
        text_width, vision_width = self.text_encoder.width, self.vision_encoder.width

        self.prompts, context_init = sentence_context(self.text_encoder, tokenizer, classnames, config.n_ctx,
                                                      config.ctx_init)
        self.ctx = nn.Parameter(context_init)  # [n_ctx, text_width]
        self.deep_ctx = nn.Parameter(torch.empty(depth - 1, config.n_ctx, text_width).normal_(std=PROMPT_INIT_STD))
        # Depth 0 has its own map; the deeper ones start as copies of one another, as in the release.
        deep_map = nn.Linear(text_width, vision_width)
        self.couplings = nn.ModuleList([nn.Linear(text_width, vision_width)]
                                       + [copy.deepcopy(deep_map) for _ in range(depth - 1)])

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
        context, *deep = self.text_prompts()
        embeds = self.prompts.token_embeddings(self.text_encoder.token_embedding, context)
        return self.encode_prompts(embeds, self.prompts.injections(deep, first_layer=1))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[batch, embed]`` with the coupled vision prompts (not normalised)."""
        return self.vision_encoder(images, self.vision_prompts())
