"""Distillation targets: CLIP text features of class sentences extended with the LLM's noun phrases.

Two recipes (``--target-recipe``); each encodes sentences ``s(c) + " with " + p``,
normalises each sentence's features and takes their mean, normalised again, as
the class's target (``llamp.class_features.MEAN_OF_NORMALISED``):

* ``release`` (the default), as the authors' release computes them: ``s`` is the
  first of the dataset's CLIP templates (the release has one per dataset), the
  ``p`` are the noun phrases stored for the first query template's answer, as they
  are (for the release layout, spaCy's chunks with pronouns and repeats). The
  release writes ``s(c) + "with " + p``; with a space after the template's final
  "." CLIP's tokenizer gives the same tokens, so the sentence is written with one.
  Where the release stops (an answer without a noun chunk), the class's target is
  the plain sentence ``s(c)``;
* ``pooled``: every CLIP template of the dataset times the noun phrases of all
  query templates, cleaned (pronoun-only chunks and repeats dropped); a class
  without phrases uses the plain sentences.

E.g. "a photo of a abyssinian, a breed of pet. with large pointed ears".
"""
from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from llamp.class_features import MEAN_OF_NORMALISED, average_over_templates
from llamp.clip.loading import LoadedCLIP
from llamp.errors import ConfigError
from llamp.quiet import progress_disabled
from llamp.templates import class_prompt_name

from .noun_phrases import clean_phrases

RELEASE = "release"
POOLED = "pooled"
RECIPES = {
    RELEASE: "the first CLIP template + ' with ' + each noun phrase of the first query template's answer, as "
             "stored: the authors' release",
    POOLED: "every CLIP template + ' with ' + each cleaned noun phrase of all query templates",
}


def check_recipe(name: str) -> str:
    if name not in RECIPES:
        raise ConfigError(f"--target-recipe {name}: choose one of {', '.join(RECIPES)}")
    return name


def recipe_templates(recipe: str, clip_templates: Sequence[str]) -> list[str]:
    """The CLIP templates a recipe encodes."""
    return list(clip_templates[:1] if recipe == RELEASE else clip_templates)


def recipe_phrases(recipe: str, per_template: Sequence[Sequence[str]]) -> list[str]:
    """One class's phrases for a recipe, from its stored noun phrases per query template (in template order)."""
    if recipe == RELEASE:
        return list(per_template[0])
    return clean_phrases([p for phrases in per_template for p in phrases])


def target_sentences(clip_templates: Sequence[str], classname: str, phrases: Sequence[str]) -> list[str]:
    """The sentences whose features are averaged into one class's target."""
    name = class_prompt_name(classname)
    if not phrases:
        return [t.format(name) for t in clip_templates]
    return [f"{t.format(name)} with {p}" for t in clip_templates for p in phrases]


@torch.no_grad()
def distillation_targets(clip: LoadedCLIP, classnames: Sequence[str], phrases: Sequence[Sequence[str]],
                         clip_templates: Sequence[str], batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """Normalised targets ``[classes, embed]`` (fp32, CPU); ``phrases[i]`` belongs to ``classnames[i]``
    (the recipe's: ``recipe_phrases``, and ``clip_templates`` its ``recipe_templates``)."""
    rows = []
    for classname, class_phrases in tqdm(list(zip(classnames, phrases)), desc="targets", unit="class",
                                         leave=False, disable=progress_disabled(progress)):
        features = clip.encode_text(target_sentences(clip_templates, classname, class_phrases),
                                    batch_size=batch_size)  # [sentences, embed]
        rows.append(average_over_templates(features, MEAN_OF_NORMALISED).cpu())
    return torch.stack(rows)
