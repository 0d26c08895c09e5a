"""Quiet logs: no deprecation noise from our imports, progress bars only on a terminal.

Runs are often logged to files (``log.txt``, cluster job logs), where a
progress bar is a page of carriage returns and an import-time warning
repeats on every run without anything to act on.
"""
from __future__ import annotations

import os
import sys
import warnings

PKG_RESOURCES_MESSAGE = "pkg_resources is deprecated"


def ignore_pkg_resources_warning() -> None:
    """Call before importing openai-clip or Dassl (whose wilds import pulls in ``outdated``).

    Both import the deprecated ``pkg_resources``, which warns. ``outdated``
    does it from a background thread that outlives the import, so the filter
    stays installed (a ``catch_warnings`` block would be gone by then); it
    matches that one message only.
    """
    warnings.filterwarnings("ignore", message=PKG_RESOURCES_MESSAGE, category=UserWarning)


def on_terminal() -> bool:
    """True if stderr, where progress bars go, is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bars_only_on_a_terminal() -> None:
    """Switch off transformers' and tqdm's progress bars when stderr is not a terminal.

    Call it first thing in an entry point: tqdm reads ``TQDM_DISABLE`` when it is
    imported (torch imports it), huggingface_hub its variable likewise; if
    transformers is imported already, its bars are switched off directly.
    Bars that our own code shows pass ``disable=None`` (tqdm: off unless on a
    terminal), which the variable does not override.
    """
    if on_terminal():
        return
    os.environ.setdefault("TQDM_DISABLE", "1")  # Dassl's evaluation loop, among others
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights", "Writing model shards"
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()


def quiet_logs() -> None:
    """Both of the above: what every command-line entry point calls before its heavy imports."""
    ignore_pkg_resources_warning()
    progress_bars_only_on_a_terminal()


def progress_disabled(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar that ``progress`` asks for: off, or shown only on a terminal."""
    return None if progress else True
