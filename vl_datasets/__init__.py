"""Dassl dataset classes for the CoOp benchmarks, the ImageNet variants and a synthetic set.

Importing this package registers every dataset in Dassl's
``DATASET_REGISTRY`` under its class name (``OxfordPets``, ``ImageNet``,
``Synthetic``, ...). Call ``add_dataset_config(cfg)`` on the Dassl cfg
before merging config files, to add ``DATASET.SUBSAMPLE_CLASSES``.

(Not named ``datasets``: that would shadow the Hugging Face package.)
"""
from llamp.quiet import ignore_pkg_resources_warning

ignore_pkg_resources_warning()  # before Dassl is imported (its wilds import warns)

from . import benchmarks, fgvc_aircraft, imagenet, synthetic  # noqa: E402,F401  (registers the classes)
from .common import (  # noqa: E402
    SplitFileDataset, VLDataset, fewshot_cache_path, read_split, sample_few_shot, subsample_classes)
from .config import SUBSAMPLE_CHOICES, add_dataset_config, check_dataset_config, dataset_config  # noqa: E402
from .synthetic import SYNTHETIC_CLASSNAMES, write_synthetic_dataset  # noqa: E402

__all__ = [
    "SUBSAMPLE_CHOICES",
    "SYNTHETIC_CLASSNAMES",
    "SplitFileDataset",
    "VLDataset",
    "add_dataset_config",
    "check_dataset_config",
    "dataset_config",
    "fewshot_cache_path",
    "read_split",
    "sample_few_shot",
    "subsample_classes",
    "write_synthetic_dataset",
]
