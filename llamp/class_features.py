"""Class features of frozen CLIP averaged over hand-written templates: the averaging conventions, stated once.

Zero-shot CLIP, KgCoOp and PromptSRC score or regulate with frozen CLIP's
features of sentences such as "a photo of a {class}.", and the knowledge
cache's distillation targets average sentences in the same way. Two
conventions are used by the original methods, so the caller names one:

* ``MEAN_OF_NORMALISED`` (CLIP's prompt ensembling; zero-shot CLIP, KgCoOp,
  the distillation targets): each sentence's features normalised, their mean
  normalised again;
* ``MEAN_OF_RAW`` (PromptSRC's text targets): the raw features averaged, then
  normalised.

With one template, ``MEAN_OF_NORMALISED`` still normalises twice (the mean of
one is itself), as CLIP's ensembling code does; ``renormalise_single=False``
keeps the single template's features normalised once, as KgCoOp's release
does, so that its learned prompts equal to the template give a distance of
exactly zero.

The encoder is the caller's (CLIP's own text tower, or the prompted tower a
method reads its learned prompts through): it maps sentences to features.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .templates import class_prompt_name

MEAN_OF_NORMALISED = "mean of normalised"
MEAN_OF_RAW = "mean of raw"
AVERAGES = (MEAN_OF_NORMALISED, MEAN_OF_RAW)


def average_over_templates(features: torch.Tensor, average: str, renormalise_single: bool = True) -> torch.Tensor:
    """Unit-length features ``[..., embed]`` (fp32) from ``features [T, ..., embed]`` of T templates or sentences."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    features = features.float()
    if average == MEAN_OF_RAW:
        return F.normalize(features.mean(0), dim=-1)
    unit = F.normalize(features, dim=-1)
    if len(unit) == 1 and not renormalise_single:
        return unit[0]
    return F.normalize(unit.mean(0), dim=-1)


@torch.no_grad()
def template_class_features(encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                            templates: Sequence[str], average: str,
                            renormalise_single: bool = True) -> torch.Tensor:
    """Unit-length class features ``[C, embed]`` (fp32): every template filled with every class name,
    encoded by ``encode_text`` (sentences -> ``[n, embed]``) and averaged over templates."""
    names = [class_prompt_name(c) for c in classnames]
    features = torch.stack([encode_text([t.format(n) for n in names]).float() for t in templates])  # [T, C, embed]
    return average_over_templates(features, average, renormalise_single)
