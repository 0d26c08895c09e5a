"""What the LLM is asked: the per-dataset query templates and the chat prompt around them.

The wording lives in a JSON file (data, not code): by default
``templates/query_templates.json``, or the researcher's own file given with
``--query-templates`` (the same format, e.g. the published wording). The chat
markup (special tokens, role headers) comes from the tokenizer's own chat
template, so any Hugging Face chat model works: LLaMA-2/3, Mistral, Qwen, ...

The file format: ``"_chat"`` holds the wording of every conversation
(``system``, ``user_prefix``, ``answer_start`` with ``{}`` for the class
name); every other key not starting with ``_`` is a registered Dassl dataset
name (or ``default``) mapped to its list of templates, each with one ``{}``
for the class name, or to the name of another entry whose list it shares.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llamp.errors import ConfigError, MissingFileError
from llamp.json_files import read_json
from llamp.templates import check_template, class_prompt_name

TEMPLATES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "query_templates.json")
CHAT_KEY = "_chat"
DEFAULT_KEY = "default"
QUERY_TEMPLATES_FLAG = "--query-templates"


@dataclass(frozen=True)
class ChatWording:
    """The fixed parts of every conversation."""

    system: str
    user_prefix: str
    answer_start: str  # '{}' is the class name

    def question(self, template: str, classname: str) -> str:
        """The user turn: ``user_prefix`` + the template filled with the class name."""
        return self.user_prefix + template.format(class_prompt_name(classname))

    def answer_opening(self, classname: str) -> str:
        """How the assistant's answer starts, e.g. "The red circle appears as"."""
        return self.answer_start.format(class_prompt_name(classname))


@dataclass(frozen=True)
class QueryFile:
    """A query-template file, checked: its chat wording, its per-dataset lists and its digest."""

    path: str  # absolute
    sha256: str  # of the file's bytes
    builtin: bool  # the file that ships with llm_prompts
    table: dict

    @property
    def wording(self) -> ChatWording:
        return ChatWording(**self.table[CHAT_KEY])

    def has(self, dataset: str) -> bool:
        """True if ``dataset`` has its own entry (else :meth:`templates` falls back to ``default``)."""
        return dataset in self.table and not dataset.startswith("_")

    def templates(self, dataset: str) -> list[str]:
        """The templates of a registered Dassl dataset name (``default`` for names without an entry)."""
        key = dataset if self.has(dataset) else DEFAULT_KEY
        if key not in self.table:
            raise ConfigError(f"{_label(self.path, self.builtin)} has no entry for {dataset} and no "
                              f"{DEFAULT_KEY!r} entry: add one")
        return list(self.table[_resolve(self.table, key, _label(self.path, self.builtin))])

    def describe(self) -> dict:
        """What the cache metadata records about the wording's source."""
        return {"file": self.path, "sha256": self.sha256, "builtin": self.builtin}


def _label(path: str, builtin: bool) -> str:
    """How errors name the file: the flag that gave it, or the built-in file's path."""
    return path if builtin else f"{QUERY_TEMPLATES_FLAG} {path}"


def _resolve(table: dict, key: str, label: str) -> str:
    """Follow aliases (an entry whose value names another entry) to a list."""
    seen = [key]
    while isinstance(table.get(key), str):
        key = table[key]
        if key in seen:
            raise ConfigError(f"{label}: aliases loop through {' -> '.join(seen + [key])}")
        if key not in table:
            raise ConfigError(f"{label}: entry {seen[-1]!r} names {key!r}, which is not in the file")
        seen.append(key)
    return key


def _check_table(table: Any, label: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{label}: expected a JSON object of dataset names, got {type(table).__name__}")
    chat = table.get(CHAT_KEY)
    fields = ("system", "user_prefix", "answer_start")
    if not isinstance(chat, dict) or set(chat) != set(fields) or not all(isinstance(chat[f], str) for f in fields):
        raise ConfigError(f"{label}: {CHAT_KEY!r} must be an object with the strings {', '.join(fields)} "
                          "(and nothing else)")
    check_template(chat["answer_start"], label, f"{CHAT_KEY}.answer_start")
    for key, value in table.items():
        if key.startswith("_"):
            continue
        if isinstance(value, str):
            _resolve(table, key, label)
        elif isinstance(value, list) and value and all(isinstance(t, str) for t in value):
            for template in value:
                check_template(template, label, f"entry {key!r}: template")
        else:
            raise ConfigError(f"{label}: entry {key!r} must be a non-empty list of template strings or the "
                              "name of another entry")


def load_query_file(path: str | None = None) -> QueryFile:
    """Read and check a query-template file (default: the built-in one); a bad file is one ConfigError line."""
    builtin = path is None or os.path.abspath(os.path.expanduser(path)) == TEMPLATES_FILE
    path = TEMPLATES_FILE if path is None else os.path.abspath(os.path.expanduser(path))
    label = _label(path, builtin)
    if not os.path.isfile(path):
        raise MissingFileError(f"{label} does not exist")
    file = read_json(path, label)
    _check_table(file.content, label)
    return QueryFile(path=path, sha256=file.sha256, builtin=builtin, table=file.content)


@lru_cache(maxsize=None)
def builtin_query_file() -> QueryFile:
    return load_query_file()


def chat_wording() -> ChatWording:
    """The built-in chat wording."""
    return builtin_query_file().wording


def has_query_templates(dataset: str) -> bool:
    """True if ``dataset`` has its own entry in the built-in file."""
    return builtin_query_file().has(dataset)


def query_templates(dataset: str) -> list[str]:
    """The built-in query templates of a registered Dassl dataset name (``default`` for unknown names)."""
    return builtin_query_file().templates(dataset)


def chat_prompt(tokenizer: Any, question: str, answer_opening: str, system: str) -> str:
    """The conversation as text, ending inside the assistant's turn right after ``answer_opening``.

    Rendered by the tokenizer's chat template, so model-specific markup is
    never written here. The assistant turn is rendered with
    ``continue_final_message`` when the template allows it (its own spacing
    between header and answer); otherwise the answer opening is appended to
    the generation prompt. Templates that reject a system turn get the system
    text folded into the user turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'the LLM')} has no chat "
                          "template: use a chat (instruction-tuned) model")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    try:
        opening = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # e.g. "roles must alternate user/assistant": no system turn
        messages = [{"role": "user", "content": f"{system}\n\n{question}"}]
        opening = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    try:
        continued = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": answer_opening}],
            continue_final_message=True, tokenize=False)
    except Exception:  # a template that cannot render a partial assistant turn
        continued = None
    if isinstance(continued, str) and continued.startswith(opening) and continued.endswith(answer_opening):
        return continued
    separator = "" if not opening or opening[-1].isspace() else " "
    return opening + separator + answer_opening


def with_noun_phrases(prompt: str, noun_phrases: list[str]) -> str:
    """The text whose keys/values are cached: the prompt (ending in the answer opening) + ", "-joined phrases."""
    if not noun_phrases:
        return prompt
    separator = "" if prompt[-1:].isspace() else " "
    return prompt + separator + ", ".join(noun_phrases)
