"""Errors caused by the user's input (a config key, a file, a folder), and loading that fails as one of them.

``train.py`` and the command-line tools print these as one line and exit
with status 2, instead of a traceback: they say what is wrong and what to
do about it, so a traceback would only hide the message.
"""


class ConfigError(Exception):
    """A config value, file or folder the user supplied is wrong or missing."""


class MissingFileError(ConfigError, FileNotFoundError):
    """A file or folder named by a config key (or derived from one) is missing."""


def from_local_files(cls, source: str, what: str, **kwargs):
    """``cls.from_pretrained(source)`` from local files only (nothing is downloaded); a missing or unreadable
    file is one ConfigError line: ``what`` and the loader's first line."""
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{what} ({first})") from None
