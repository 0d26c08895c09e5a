"""Dassl trainers. Importing this package registers every trainer (each module of the
package that defines one) and its config defaults: adding a trainer is adding a file."""
import importlib
import pkgutil

from .config import extend_cfg

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["extend_cfg"]
