"""The dataset keys of a Dassl cfg: adding and checking them, and the cfg a command-line tool needs for one
dataset (a dataset config file merged into Dassl's defaults)."""
from __future__ import annotations

import os
from typing import Any

from llamp.errors import ConfigError, MissingFileError

SUBSAMPLE_CHOICES = ("all", "base", "new")


def add_dataset_config(cfg: Any) -> None:
    """Add the dataset-owned keys to a Dassl cfg (from ``get_cfg_default()``).

    ``DATASET.SUBSAMPLE_CLASSES``: ``all`` | ``base`` | ``new`` — which half of
    the classes to keep (base-to-novel protocol). An existing value is kept,
    so calling this twice does not undo a merge.
    """
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def check_dataset_config(cfg: Any) -> None:
    """Raise ConfigError if a dataset key holds a value the datasets cannot use."""
    subsample_mode(cfg)
    shots = cfg.DATASET.NUM_SHOTS
    if isinstance(shots, bool) or not isinstance(shots, int):
        raise ConfigError(f"DATASET.NUM_SHOTS must be an integer (-1 for all images), got {shots!r}")
    if not str(cfg.DATASET.ROOT).strip():
        raise ConfigError("DATASET.ROOT is empty: set it (--root) to the folder that holds the datasets")


def subsample_mode(cfg: Any) -> str:
    """Return ``cfg.DATASET.SUBSAMPLE_CLASSES``, checked against all/base/new."""
    return checked_subsample(cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"))


def checked_subsample(mode: Any) -> str:
    if mode not in SUBSAMPLE_CHOICES:
        raise ConfigError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)}; got {mode!r}"
        )
    return mode


def merge_config_file(cfg: Any, path: str, flag: str) -> None:
    """Merge the YAML file ``path`` (given by ``flag``) into ``cfg``; a missing or wrong file is one line."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{flag} {path} does not exist")
    try:
        cfg.merge_from_file(path)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"{path}: {e}") from None


def dataset_config(root: str, dataset_config_file: str) -> Any:
    """The Dassl cfg a command-line tool needs for one dataset: ``--dataset-config-file`` merged, DATASET.ROOT
    set to ``root``, all classes and all images. Errors name the file."""
    from dassl.config import get_cfg_default
    from dassl.data.datasets import DATASET_REGISTRY

    cfg = get_cfg_default()
    add_dataset_config(cfg)
    merge_config_file(cfg, dataset_config_file, "--dataset-config-file")
    cfg.DATASET.ROOT = root
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.VERBOSE = False
    names = sorted(DATASET_REGISTRY.registered_names())
    if cfg.DATASET.NAME not in names:
        raise ConfigError(f"unknown dataset {cfg.DATASET.NAME!r} ({dataset_config_file}); registered: "
                          f"{', '.join(names)}")
    return cfg


def dataset_root(cfg: Any) -> str:
    """The absolute folder named by ``cfg.DATASET.ROOT`` (``~`` expanded)."""
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
