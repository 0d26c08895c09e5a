"""Dassl trainers. Importing this package registers every trainer and its config defaults."""
from . import llamp, zsclip  # noqa: F401
from .config import extend_cfg

__all__ = ["extend_cfg"]
