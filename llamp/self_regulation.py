"""The self-regulating objective: cross-entropy plus three terms that keep a prompted CLIP near frozen CLIP.

PromptSRC (Khattak et al., ICCV 2023) introduced it and LLaMP trains with it;
only the text targets differ between them (frozen CLIP's template-averaged
class features for PromptSRC, the LLM-knowledge distillation targets for
LLaMP). From normalised features:

* ``ce``: cross-entropy of ``scale * cos(image, text)``;
* ``text_l1``: L1 between the prompted class features and the text targets;
* ``image_l1``: L1 between the prompted and frozen image features;
* ``kl``: KL(frozen logits || prompted logits) per element (summed, divided by
  the number of logits, as the LLaMP release does), the frozen logits being
  the frozen image features against the text targets, at the same scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def self_regulating_losses(text: torch.Tensor, image: torch.Tensor, frozen_image: torch.Tensor,
                           targets: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
                           text_l1_weight: float, image_l1_weight: float,
                           kl_weight: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The four weighted terms and the prompted logits ``[B, C]``.

    Features as the encoders give them: ``text`` ``[C, e]``, ``image`` and ``frozen_image`` ``[B, e]``
    (normalised here, in fp32); ``targets`` ``[C, e]`` normalised already (frozen: computed once).
    """
    text, image, frozen_image = (F.normalize(x.float(), dim=-1) for x in (text, image, frozen_image))
    logits = scale * image @ text.t()  # [B, C]
    frozen_logits = scale * frozen_image @ targets.t()
    kl = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(frozen_logits, dim=-1),
                  reduction="sum", log_target=True) / logits.numel()
    losses = {
        "ce": F.cross_entropy(logits, labels),
        "text_l1": text_l1_weight * F.l1_loss(text, targets),
        "image_l1": image_l1_weight * F.l1_loss(image, frozen_image),
        "kl": kl_weight * kl,
    }
    return losses, logits
