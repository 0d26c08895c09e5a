"""Reading a JSON file the user or a build supplied: one error line naming the file, and the digest of its bytes.

Configuration files (templates, query wording) record where their content
came from by that digest; a file that is not JSON is one ConfigError line
instead of a decoder traceback. Whether a missing file is an error, and what
to do about it, is the caller's to say.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class JsonFile:
    """A JSON file's content and the sha256 of the bytes it was read from."""

    content: Any
    sha256: str


def read_json(path: str, label: str = "", advice: str = "") -> JsonFile:
    """The JSON at ``path``; invalid JSON is a ConfigError naming ``label`` (default: the path), then ``advice``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{label or path} is not valid JSON ({e}){advice}") from None
    return JsonFile(content, hashlib.sha256(data).hexdigest())
