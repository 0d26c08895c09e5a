"""What the LLM is asked: the per-dataset query templates and the chat prompt around them.

The wording lives in ``templates/query_templates.json`` (data, not code). The
chat markup (special tokens, role headers) comes from the tokenizer's own chat
template, so any Hugging Face chat model works: LLaMA-2/3, Mistral, Qwen, ...
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llamp.errors import ConfigError
from llamp.templates import class_prompt_name

TEMPLATES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "query_templates.json")


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


@lru_cache(maxsize=None)
def _table() -> dict[str, Any]:
    with open(TEMPLATES_FILE, encoding="utf-8") as f:
        return json.load(f)


def chat_wording() -> ChatWording:
    return ChatWording(**_table()["_chat"])


def has_query_templates(dataset: str) -> bool:
    """True if ``dataset`` has its own entry (else :func:`query_templates` falls back to ``default``)."""
    return dataset in _table() and not dataset.startswith("_")


def query_templates(dataset: str) -> list[str]:
    """The query templates of a registered Dassl dataset name (``default`` for unknown names)."""
    table = _table()
    key = dataset if has_query_templates(dataset) else "default"
    seen = []
    while isinstance(table.get(key), str):  # an alias: share another dataset's list
        if key in seen:
            raise ConfigError(f"{TEMPLATES_FILE}: aliases loop through {' -> '.join(seen + [key])}")
        seen.append(key)
        key = table[key]
    templates = table.get(key)
    if not isinstance(templates, list) or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ConfigError(f"{TEMPLATES_FILE}: entry {key!r} must be a list of strings with '{{}}' in each")
    return list(templates)


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
