"""Distillation targets: CLIP text features of class sentences extended with the LLM's noun phrases.

For class ``c`` with noun phrases ``p_1..p_n`` (from all query templates,
repeats dropped) and the dataset's CLIP templates ``s_1..s_m`` (the zero-shot
ensemble in ``llamp/templates/zero_shot.json``), every sentence
``s_j(c) + " with " + p_i`` — e.g. "a photo of a abyssinian, a breed of pet. with
large pointed ears" — is encoded and normalised; the mean over all (i, j),
normalised again, is the class's target (``llamp.class_features.MEAN_OF_NORMALISED``). (A class without phrases uses the
plain sentences ``s_j(c)``.)
"""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from llamp.class_features import MEAN_OF_NORMALISED, average_over_templates
from llamp.clip_loading import LoadedCLIP
from llamp.quiet import progress_disabled
from llamp.templates import class_prompt_name


def target_sentences(clip_templates: Sequence[str], classname: str, phrases: Sequence[str]) -> list[str]:
    """The sentences whose features are averaged into one class's target."""
    name = class_prompt_name(classname)
    if not phrases:
        return [t.format(name) for t in clip_templates]
    return [f"{t.format(name)} with {p}" for t in clip_templates for p in phrases]


@torch.no_grad()
def distillation_targets(clip: LoadedCLIP, classnames: Sequence[str], phrases: Sequence[Sequence[str]],
                         clip_templates: Sequence[str], batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """Normalised targets ``[classes, embed]`` (fp32, CPU); ``phrases[i]`` belongs to ``classnames[i]``."""
    rows = []
    for classname, class_phrases in tqdm(list(zip(classnames, phrases)), desc="targets", unit="class",
                                         leave=False, disable=progress_disabled(progress)):
        features = clip.encode_text(target_sentences(clip_templates, classname, class_phrases),
                                    batch_size=batch_size)  # [sentences, embed]
        rows.append(average_over_templates(features, MEAN_OF_NORMALISED).cpu())
    return torch.stack(rows)
