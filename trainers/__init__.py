"""Dassl trainers. Importing this package registers every trainer (each module of the
package that defines one) and its config defaults: adding a trainer is adding a file."""
import importlib
import pkgutil

from llamp.quiet import ignore_pkg_resources_warning

ignore_pkg_resources_warning()  # before Dassl is imported (its wilds import warns)

from .config import extend_cfg  # noqa: E402

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["extend_cfg"]
