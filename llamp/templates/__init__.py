"""Hand-written sentence templates, kept as data files in this folder."""
from __future__ import annotations

import json
import os
from functools import lru_cache

_HERE = os.path.dirname(os.path.abspath(__file__))


@lru_cache(maxsize=None)
def _read(file_name: str) -> dict[str, list[str]]:
    with open(os.path.join(_HERE, file_name), encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def zero_shot_templates(dataset_name: str, ensemble: bool = False) -> list[str]:
    """CLIP prompts for ``dataset_name`` (a registered Dassl name; unknown names get generic ones).

    Without ``ensemble`` only the first, dataset-specific prompt is returned.
    """
    table = _read("zero_shot.json")
    templates = table.get(dataset_name, table["default"])
    return list(templates) if ensemble else templates[:1]


def class_prompt_name(classname: str) -> str:
    """A class name as it goes into a sentence: folder-style underscores become spaces."""
    return classname.replace("_", " ")
