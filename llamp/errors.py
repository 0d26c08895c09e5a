"""Errors caused by the user's input (a config key, a file, a folder).

``train.py`` and the command-line tools print these as one line and exit
with status 2, instead of a traceback: they say what is wrong and what to
do about it, so a traceback would only hide the message.
"""


class ConfigError(Exception):
    """A config value, file or folder the user supplied is wrong or missing."""


class MissingFileError(ConfigError, FileNotFoundError):
    """A file or folder named by a config key (or derived from one) is missing."""
