"""A dataset's name, class names (label order) and folder, read through Dassl like train.py does."""
from __future__ import annotations

import os
from dataclasses import dataclass

from llamp.errors import ConfigError, MissingFileError
from llamp.quiet import ignore_pkg_resources_warning


@dataclass
class DatasetInfo:
    name: str  # the registered Dassl name, e.g. "OxfordPets"
    classnames: list[str]  # in label order
    dataset_dir: str  # ROOT/<the dataset's folder>


def dataset_info(root: str, dataset_config_file: str) -> DatasetInfo:
    """Build the dataset named by ``dataset_config_file`` under ``root`` with all classes and all images."""
    ignore_pkg_resources_warning()  # before Dassl is imported (its wilds import warns)
    from dassl.config import get_cfg_default
    from dassl.data.datasets import DATASET_REGISTRY, build_dataset

    import vl_datasets

    if not os.path.isfile(dataset_config_file):
        raise MissingFileError(f"--dataset-config-file {dataset_config_file} does not exist")
    cfg = get_cfg_default()
    vl_datasets.add_dataset_config(cfg)
    try:
        cfg.merge_from_file(dataset_config_file)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"{dataset_config_file}: {e}") from None
    cfg.DATASET.ROOT = root
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.VERBOSE = False
    names = sorted(DATASET_REGISTRY.registered_names())
    if cfg.DATASET.NAME not in names:
        raise ConfigError(f"unknown dataset {cfg.DATASET.NAME!r} ({dataset_config_file}); registered: "
                          f"{', '.join(names)}")
    dataset = build_dataset(cfg)
    dataset_dir = getattr(dataset, "dataset_dir", "") or os.path.join(root, cfg.DATASET.NAME)
    return DatasetInfo(name=cfg.DATASET.NAME, classnames=list(dataset.classnames),
                       dataset_dir=os.path.abspath(dataset_dir))
