"""Hand-written sentence templates, kept as data files in this folder, or the researcher's own.

Every method that turns class names into CLIP sentences (zero-shot CLIP, KgCoOp,
PromptSRC, the knowledge cache's distillation targets) takes its templates from
one setting, resolved by :func:`configured_templates`:

* empty (``None``, ``""`` or ``[]``): our wording, ``zero_shot.json`` here;
* a list of strings: these templates, for every dataset;
* a path to a JSON file: either a list of strings, or an object in the format
  of ``zero_shot.json`` — registered Dassl dataset names (and ``default``)
  mapped to lists, keys starting with ``_`` ignored.

Each template holds exactly one ``{}`` for the class name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import ConfigError, MissingFileError
from ..json_files import read_json

_HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN_FILE = os.path.join(_HERE, "zero_shot.json")
DEFAULT_KEY = "default"


@lru_cache(maxsize=None)
def _read(file_name: str) -> dict[str, list[str]]:
    with open(os.path.join(_HERE, file_name), encoding="utf-8") as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def zero_shot_templates(dataset_name: str, ensemble: bool = False) -> list[str]:
    """Our CLIP prompts for ``dataset_name`` (a registered Dassl name; unknown names get generic ones).

    Without ``ensemble`` only the first, dataset-specific prompt is returned.
    """
    table = _read("zero_shot.json")
    templates = table.get(dataset_name, table[DEFAULT_KEY])
    return list(templates) if ensemble else templates[:1]


def class_prompt_name(classname: str) -> str:
    """A class name as it goes into a sentence: folder-style underscores become spaces."""
    return classname.replace("_", " ")


def check_template(text: Any, where: str, what: str = "template") -> None:
    """``text`` must be a string holding exactly one ``{}`` and no other replacement field (``{{`` is fine).

    ``where`` names the file or key, ``what`` the entry, in the one-line error.
    """
    marker = "\x00"  # a character no template holds: counting it counts the fields that were filled
    try:
        filled = text.format(marker) if isinstance(text, str) else None
    except (IndexError, KeyError, ValueError):
        filled = None
    if filled is None or filled.count(marker) != 1:
        raise ConfigError(f"{where}: {what} {text!r} must be a string holding exactly one '{{}}' for the "
                          "class name (and no other braces)")


@dataclass(frozen=True)
class TemplateChoice:
    """The templates a method uses for one dataset, and where they came from (for logs and metadata)."""

    templates: list[str]
    source: str  # "built-in", "config list" or the JSON file's absolute path
    sha256: str | None = None  # of the JSON file's bytes
    listed: int = 0  # how many the dataset's list holds (more than ``templates`` when only the first is used)

    def describe(self) -> dict:
        return {"source": self.source, "sha256": self.sha256}


def _checked_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of template strings")
    for template in value:
        check_template(template, where)
    return list(value)


def _from_file(path: str, dataset_name: str, key: str) -> TemplateChoice:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        single = "{}" in path and not key.startswith("--")  # a config key, where a list can be given
        hint = " (a single template is given as a list: ['a photo of a {}.'])" if single else ""
        raise MissingFileError(f"{key} {path}: no such file{hint}")
    where = f"{key} {path}"
    file = read_json(full, where)
    content, digest = file.content, file.sha256
    if isinstance(content, list):
        return TemplateChoice(_checked_list(content, where), full, digest)
    if not isinstance(content, dict):
        raise ConfigError(f"{where} must hold a list of templates or an object of dataset names to lists")
    entries = {k: v for k, v in content.items() if not k.startswith("_")}
    for name, value in entries.items():  # a bad entry fails whichever dataset runs
        _checked_list(value, f"{where}, entry {name!r},")
    entry = dataset_name if dataset_name in entries else DEFAULT_KEY
    if entry not in entries:
        raise ConfigError(f"{where} has no entry for {dataset_name} and no {DEFAULT_KEY!r} entry: add one")
    return TemplateChoice(list(entries[entry]), full, digest)


def configured_templates(setting: Any, dataset_name: str, key: str, ensemble: bool = True) -> TemplateChoice:
    """The templates a config key (or flag) ``key`` set to ``setting`` gives for ``dataset_name``.

    ``ensemble`` False keeps the first template of the dataset's list (the
    single-prompt variant), True all of them. Errors are one line naming ``key``.
    """
    if setting is None or (isinstance(setting, (str, list, tuple)) and len(setting) == 0):
        table = _read("zero_shot.json")
        choice = TemplateChoice(list(table.get(dataset_name, table[DEFAULT_KEY])), "built-in")
    elif isinstance(setting, (list, tuple)):
        choice = TemplateChoice(_checked_list(list(setting), key), "config list")
    elif isinstance(setting, str):
        choice = _from_file(setting, dataset_name, key)
    else:
        raise ConfigError(f"{key} must be empty, a list of templates or a JSON file path, got {setting!r}")
    if not ensemble:
        return TemplateChoice(choice.templates[:1], choice.source, choice.sha256, len(choice.templates))
    return TemplateChoice(choice.templates, choice.source, choice.sha256, len(choice.templates))


def describe_choice(choice: TemplateChoice, key: str) -> str:
    """One log line: how many templates, from where."""
    origin = {"built-in": f"our wording ({BUILTIN_FILE})", "config list": f"the list in {key}"}.get(
        choice.source, f"{choice.source} ({key})")
    count = f"{len(choice.templates)} template(s)" if choice.listed <= len(choice.templates) else \
        f"the first of {choice.listed} templates (ENSEMBLE False)"
    return f"{count} from {origin}: {choice.templates[:3]}" + (" ..." if len(choice.templates) > 3 else "")
