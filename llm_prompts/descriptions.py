"""``descriptions.jsonl``: every LLM answer and its noun phrases, one JSON object a line.

A record (keys in this order, so the file reads well)::

    {"dataset": "OxfordPets", "class": "abyssinian", "template_index": 0,
     "template": "describe the distinctive appearance of a {}, a type of pet.",
     "question": "In one sentence, describe ...", "answer_start": "The abyssinian appears as",
     "answer": "a slender cat with ...", "noun_phrases": ["a slender cat", ...],
     "noun_phrase_method": "spacy:en_core_web_sm:all-chunks", "generation_sha256": "3f0c..."}

A record is found by (class, template_index). ``generation_sha256`` identifies
what produced the answer (the prompt's token ids, the LLM's dtype, the length
limit): a build reuses a record only while it is unchanged, and generates the
answer again otherwise. The file may be edited by hand (keep that field):
change ``noun_phrases`` to change what is cached, or set it to ``null`` to have
it extracted again from an edited ``answer``. When a class appears twice for a
template, the later line wins. A build appends records as it generates them,
so a killed build may leave a truncated last line: it is ignored.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Mapping

from llamp.errors import ConfigError
from llamp.atomic_files import append_synced, write_text_atomic

RECORD_KEYS = ("dataset", "class", "template_index", "template", "question", "answer_start", "answer",
               "noun_phrases", "noun_phrase_method", "generation_sha256")
Key = tuple[str, int]


def record_key(record: Mapping) -> Key:
    return record["class"], int(record["template_index"])


def read_descriptions(path: str) -> dict[Key, dict]:
    """Records by (class, template index); ``{}`` if the file does not exist.

    A line that is not a valid record is a ConfigError naming ``path:line``,
    except a last line without a newline (a build killed mid-write), which is skipped.
    """
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as f:  # bytes: a line cut short may end inside a character
        lines = f.read().split(b"\n")
    records: dict[Key, dict] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last_unterminated = number == len(lines)  # split() leaves b"" after a final newline
        try:
            record = json.loads(raw.decode("utf-8"))
            _check_record(record)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, KeyError) as e:
            if last_unterminated:
                break
            raise ConfigError(f"{path}:{number} is not a valid description record ({e}): fix or delete "
                              "that line") from None
        records[record_key(record)] = record
    return records


def _check_record(record: object) -> None:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for key in ("class", "template_index", "template", "answer"):
        if key not in record:
            raise KeyError(key)
    if not isinstance(record["class"], str) or not isinstance(record["answer"], str):
        raise TypeError("class and answer must be strings")
    int(record["template_index"])
    phrases = record.get("noun_phrases")
    if phrases is not None and not (isinstance(phrases, list) and all(isinstance(p, str) for p in phrases)):
        raise TypeError("noun_phrases must be a list of strings or null")


def make_record(**fields) -> dict:
    """A record with the keys in file order."""
    return {key: fields.get(key) for key in RECORD_KEYS}


def _line(record: Mapping) -> str:
    ordered = {key: record.get(key) for key in RECORD_KEYS}
    ordered.update({k: v for k, v in record.items() if k not in ordered})  # keep extra keys a user added
    return json.dumps(ordered, ensure_ascii=False) + "\n"


def append_descriptions(path: str, records: Iterable[Mapping]) -> None:
    """Append records and flush them to disk (a batch at a time during generation)."""
    append_synced(path, "".join(_line(r) for r in records))


def write_descriptions(path: str, records: Iterable[Mapping]) -> None:
    """Rewrite the whole file atomically (in the order given)."""
    write_text_atomic(path, "".join(_line(r) for r in records))
