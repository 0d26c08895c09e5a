"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted by an image-conditioned bias.

A small meta-net (Linear - ReLU - Linear, embed -> embed / 16 -> text width)
maps each image's normalised CLIP feature to one vector that is added to every
context token. The class prompts therefore differ from image to image, and so
do the text features: each image is scored against its own ``[C, embed]``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..errors import ConfigError
from .coop import CoOp, CoOpConfig


@dataclass
class CoCoOpConfig(CoOpConfig):
    meta_net_reduction: int = 16  # meta-net: image feature width -> width // this -> text width


class CoCoOp(CoOp):
    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: CoCoOpConfig):
        super().__init__(clip, tokenizer, classnames, config)
        if config.meta_net_reduction < 1:
            raise ConfigError(f"{{meta_net_reduction}} must be at least 1, got {config.meta_net_reduction}",
                              fields=("meta_net_reduction",))
        embed, width = clip.config.projection_dim, self.text_encoder.width
        hidden = max(1, embed // config.meta_net_reduction)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed, hidden)),
            ("relu", nn.ReLU()),
            ("linear2", nn.Linear(hidden, width)),
        ]))

    def context_shift(self, image: torch.Tensor) -> torch.Tensor:
        """One bias per image ``[B, width]`` from normalised image features ``[B, embed]``."""
        return self.meta_net(image)

    def image_text_features(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised text features ``[B, C, embed]``: every class prompt, conditioned on each image.

        ``image``: normalised image features ``[B, embed]``. One text-tower pass per
        image (``C`` prompts each), so memory grows with the class count, not with ``B * C``.
        """
        shifts = self.context_shift(image)  # [B, width]
        per_image = [F.normalize(self.text_features(self.prompts.class_context(shift)).float(), dim=-1)
                     for shift in shifts]  # each [C, embed]
        return torch.stack(per_image)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_features(images).float(), dim=-1)  # [B, embed]
        return self.logits(image, self.image_text_features(image))
