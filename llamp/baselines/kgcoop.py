"""KgCoOp (Yao et al., CVPR 2023): CoOp kept close to CLIP's hand-crafted prompts.

Loss = CE + weight * mean over classes of ||w_c - w_c^clip||^2, where ``w_c`` is
the normalised text feature of class c's learned prompt and ``w_c^clip`` that
of the hand-crafted prompt(s), e.g. "a photo of a {c}." (normalised; with
several templates, the renormalised mean of their normalised features:
``llamp.class_features``).

For unit vectors ||a - b||^2 = 2 (1 - cos(a, b)): the authors' release
computes weight' * (1 - mean cos), so its weight' = 8 equals weight = 4 here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from ..class_features import MEAN_OF_NORMALISED, template_class_features
from ..clip.tokenizer import clip_token_ids
from ..errors import ConfigError
from .coop import CoOp, CoOpConfig


@dataclass
class KgCoOpConfig(CoOpConfig):
    # lambda on the mean squared L2 distance between normalised learned and hand-crafted text features:
    # 4.0 reproduces the authors' release, which puts 8.0 on (1 - cos) = distance / 2
    weight: float = 4.0


class KgCoOp(CoOp):
    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: KgCoOpConfig,
                 templates: Sequence[str]):
        super().__init__(clip, tokenizer, classnames, config)
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError(f"KgCoOp needs hand-crafted templates containing '{{}}', got {list(templates)}")
        self.templates = list(templates)
        self.register_buffer("handcrafted", self.handcrafted_features(tokenizer), persistent=False)  # [C, embed]

    def handcrafted_features(self, tokenizer: CLIPTokenizer) -> torch.Tensor:
        """Normalised frozen-CLIP features ``[C, embed]`` of the hand-crafted prompts (``MEAN_OF_NORMALISED``;
        one template normalised once, as the release).

        Read through the same text tower as the learned prompts, so that a context
        equal to the template's words gives exactly the same feature.
        """
        device = self.text_encoder.embeddings.token_embedding.weight.device

        def encode(texts: list[str]) -> torch.Tensor:
            ids = clip_token_ids(tokenizer, texts).to(device)  # [C, 77]
            return self.text_encoder.sentence_features(ids, tokenizer.eos_token_id)

        return template_class_features(encode, self.classnames, self.templates, MEAN_OF_NORMALISED,
                                       renormalise_single=False)

    def knowledge_distance(self, text: torch.Tensor) -> torch.Tensor:
        """Mean over classes of the squared L2 distance of normalised ``text [C, embed]`` to the hand-crafted ones."""
        return (text - self.handcrafted).pow(2).sum(-1).mean()

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        image = F.normalize(self.image_features(images).float(), dim=-1)  # [B, embed]
        text = F.normalize(self.text_features().float(), dim=-1)  # [C, embed]
        logits = self.logits(image, text)
        return {"ce": F.cross_entropy(logits, labels),
                "kg": self.config.weight * self.knowledge_distance(text)}, logits
