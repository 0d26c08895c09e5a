"""Writing files so that a reader (or a killed writer) never leaves half of one behind.

Each file is written under a temporary name in its own folder, then renamed
into place: on POSIX the rename is atomic, so the old file or the new one is
there, never a truncated mix.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; data, caches and checkpoints are shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, dump)


def write_json_atomic(path: str, obj: Any, indent: int | None = 1) -> None:
    """``obj`` as JSON (one trailing newline)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
