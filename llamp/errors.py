"""Errors caused by the user's input (a config key, a file, a folder), and loading that fails as one of them.

``train.py`` and the command-line tools print these as one line and exit
with status 2, instead of a traceback: they say what is wrong and what to
do about it, so a traceback would only hide the message.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
import sys
from typing import Callable, Iterator, Mapping, Sequence


# What the block being run calls each field (set by :func:`naming`): a config key, a flag.
_NAMES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("names", default={})


def _named(template: str, fields: Sequence[str], names: Mapping[str, str]) -> str:
    """``template`` with ``{field}`` replaced for each of ``fields`` (any other brace, a template's ``{}``,
    stays as written)."""
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m[1], m[1]) if m[1] in fields else m[0], template)


class ConfigError(Exception):
    """A config value, file or folder the user supplied is wrong or missing.

    The library knows no config keys: an error about one of a method's settings
    names it by its field, ``{n_ctx}`` in ``message`` with ``fields=("n_ctx",)``.
    Whoever knows where the setting came from says what it is called there with
    :func:`naming` around the code that may raise (a trainer: TRAINER.MAPLE.N_CTX,
    a command-line tool: its flag); elsewhere the field's own name is printed.
    """

    def __init__(self, message: str = "", *, fields: Sequence[str] = ()):
        self.template, self.fields = message, tuple(fields)
        super().__init__(_named(message, self.fields, _NAMES.get()))

    def naming(self, names: Mapping[str, str]) -> "ConfigError":
        """This error with each of its fields called what ``names`` calls it (fields not there keep theirs)."""
        renamed = type(self)(_named(self.template, self.fields, names)) if self.fields else self
        renamed.__cause__ = self.__cause__
        return renamed


@contextlib.contextmanager
def naming(names: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, errors and notes that name a setting's field call it as ``names`` does
    (field -> config key or flag)."""
    token = _NAMES.set({**_NAMES.get(), **names})
    try:
        yield
    finally:
        _NAMES.reset(token)


def note(message: str, fields: Sequence[str] = ()) -> None:
    """Print a one-line note about a setting (``{field}`` in ``message`` named as in :class:`ConfigError`)."""
    print("Note: " + _named(message, fields, _NAMES.get()))


class MissingFileError(ConfigError, FileNotFoundError):
    """A file or folder named by a config key (or derived from one) is missing."""


def from_local_files(cls, source: str, what: str, fields: Sequence[str] = (), **kwargs):
    """``cls.from_pretrained(source)`` from local files only (nothing is downloaded); a missing or unreadable
    file is one ConfigError line: ``what`` (naming ``fields``) and the loader's first line."""
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{what} ({first})", fields=fields) from None


def run_command(run: Callable[[], object]) -> int:
    """A command-line tool's exit status: 0 once ``run()`` is done, or 2 after printing a ConfigError as one
    ``error:`` line (no traceback: the message says what to do)."""
    try:
        run()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
