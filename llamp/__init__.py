"""LLaMP library: the prompted CLIP, the LLaMP model and its baselines, LLM loading, the knowledge cache.

This package never imports Dassl, so the models can be used and tested on
their own; the Dassl trainers live in ``trainers/``. README.md's "Where things
live" maps its modules, one idea each.
"""
from .errors import ConfigError, MissingFileError

__all__ = ["ConfigError", "MissingFileError"]
