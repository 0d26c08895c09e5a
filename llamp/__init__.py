"""LLaMP library: CLIP and LLM loading, prompted encoders, knowledge cache.

This package never imports Dassl, so the models can be used and tested on
their own; the Dassl trainers live in ``trainers/``.
"""
from .errors import ConfigError, MissingFileError

__all__ = ["ConfigError", "MissingFileError"]
