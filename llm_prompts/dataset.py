"""A dataset's name, class names (label order) and folder, read through Dassl like train.py does."""
from __future__ import annotations

import os
from dataclasses import dataclass

from llamp.quiet import ignore_pkg_resources_warning


@dataclass
class DatasetInfo:
    name: str  # the registered Dassl name, e.g. "OxfordPets"
    classnames: list[str]  # in label order
    dataset_dir: str  # ROOT/<the dataset's folder>


def dataset_info(root: str, dataset_config_file: str) -> DatasetInfo:
    """Build the dataset named by ``dataset_config_file`` under ``root`` with all classes and all images."""
    ignore_pkg_resources_warning()  # before Dassl is imported (its wilds import warns)
    from dassl.data.datasets import build_dataset

    from vl_datasets import dataset_config

    cfg = dataset_config(root, dataset_config_file)
    dataset = build_dataset(cfg)
    dataset_dir = getattr(dataset, "dataset_dir", "") or os.path.join(root, cfg.DATASET.NAME)
    return DatasetInfo(name=cfg.DATASET.NAME, classnames=list(dataset.classnames),
                       dataset_dir=os.path.abspath(dataset_dir))
