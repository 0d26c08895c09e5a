"""What every dataset class shares: file reading, few-shot, base/new (its config keys: ``vl_datasets.config``).

Each benchmark class only declares where its files are; reading split files,
few-shot sampling (with its JSON cache) and base/new subsampling live here,
once, and follow the CoOp ecosystem's rules so that splits match published
CoOp / MaPLe / PromptSRC numbers.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from dassl.data.datasets import DatasetBase, Datum

from llamp.atomic_files import write_json_atomic
from llamp.errors import ConfigError, MissingFileError

from .config import check_dataset_config, checked_subsample, dataset_root, subsample_mode

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
FEWSHOT_FOLDER = "split_fewshot"


# ---------------------------------------------------------------- files


def require_dir(path: str, hint: str) -> str:
    """Return ``path`` if it is a folder, else MissingFileError ending with ``hint`` (what to do)."""
    if not os.path.isdir(path):
        raise MissingFileError(f"folder {path} not found: {hint}")
    return path


def require_file(path: str, hint: str) -> str:
    """Return ``path`` if it is a file, else MissingFileError ending with ``hint`` (what to do)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"file {path} not found: {hint}")
    return path


def coop_hint(what: str) -> str:
    """'download <what> as described in the CoOp DATASETS.md' (with its address)."""
    return f"download {what} as described in the CoOp DATASETS.md ({COOP_DATASETS_MD})"


def list_dirs(folder: str) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder`` (files and dot-names skipped).

    Sorted because ``os.listdir`` order depends on the filesystem, and labels
    or few-shot samples must not.
    """
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def list_files(folder: str) -> list[str]:
    """Sorted names of the visible files in ``folder`` (sub-folders and dot-names skipped)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())


def make_datum(impath: str, label: int, classname: str, listed_in: str) -> Datum:
    """A Dassl Datum; a missing image is a MissingFileError naming the list it came from."""
    try:
        return Datum(impath=impath, label=label, classname=classname)
    except AssertionError:  # Datum asserts that the image file exists
        raise MissingFileError(
            f"image {impath} (listed in {listed_in}) not found: the dataset folder is incomplete"
        ) from None


def read_json(path: str) -> Any:
    """Load a JSON file; unreadable content is a ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); delete or re-download it") from None


def read_datum_lists(path: str, image_dir: str, keys: Sequence[str]) -> dict[str, list[Datum]]:
    """Read ``{key: [[relative_impath, label, classname], ...]}`` for each of ``keys``.

    Image paths are joined onto ``image_dir``; class names are kept verbatim.
    This is the CoOp split-file format, also used for our JSON caches.
    """
    content = read_json(path)
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a JSON object with keys {', '.join(keys)}")
    out: dict[str, list[Datum]] = {}
    for key in keys:
        if key not in content:
            raise ConfigError(f"{path} has no {key!r} list; delete or re-download it")
        items = []
        for record in content[key]:
            try:
                rel, label, classname = record
                label = int(label)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{path}: {key!r} entry {record!r} is not [image_path, label, classname]"
                ) from None
            items.append(make_datum(os.path.join(image_dir, rel), label, str(classname), path))
        out[key] = items
    return out


def write_datum_lists(path: str, lists: dict[str, list[Datum]], relative_to: str) -> None:
    """Write Datum lists in the split-file format, image paths relative to ``relative_to``."""
    content = {
        key: [[os.path.relpath(d.impath, relative_to), d.label, d.classname] for d in items]
        for key, items in lists.items()
    }
    write_json_atomic(path, content, indent=None)  # compact: ImageNet lists are large


def read_split(split_file: str, image_dir: str) -> tuple[list[Datum], list[Datum], list[Datum]]:
    """Read a CoOp split file into (train, val, test) Datum lists."""
    lists = read_datum_lists(split_file, image_dir, ("train", "val", "test"))
    return lists["train"], lists["val"], lists["test"]


# ---------------------------------------------------------------- sampling


def fewshot_cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    """Where the few-shot sample for (K, seed) is cached."""
    return os.path.join(dataset_dir, FEWSHOT_FOLDER, f"shot_{num_shots}-seed_{seed}.json")


def sample_few_shot(
    dataset: DatasetBase,
    train: list[Datum],
    val: list[Datum] | None,
    num_shots: int,
    seed: int,
    dataset_dir: str,
) -> tuple[list[Datum], list[Datum] | None]:
    """K images per class from ``train`` and min(K, 4) from ``val``, cached as JSON.

    Sampling is Dassl's ``generate_fewshot_dataset`` on the global ``random``
    stream (seeded with cfg.SEED by Dassl's train.py), train first, then val,
    exactly as CoOp does, so the same seed gives the same images. ``val=None``
    samples train only (ImageNet, whose val set is its test set). A cached
    sample for (K, seed) is read back instead of sampling again.
    """
    keys = ("train",) if val is None else ("train", "val")
    cache = fewshot_cache_path(dataset_dir, num_shots, seed)
    if os.path.isfile(cache):
        print(f"Reading the few-shot split from {cache}")
        lists = read_datum_lists(cache, dataset_dir, keys)
        empty = [key for key in keys if not lists[key]]
        if empty:  # (Dassl would fail later with a traceback far from the cause)
            raise ConfigError(f"few-shot cache {cache} has an empty {' and '.join(empty)} list: delete it "
                              "to sample again")
        return lists["train"], lists.get("val")

    train = dataset.generate_fewshot_dataset(train, num_shots=num_shots)
    if val is not None:
        val = dataset.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
    lists = {"train": train} if val is None else {"train": train, "val": val}
    print(f"Saving the few-shot split to {cache}")
    write_datum_lists(cache, lists, dataset_dir)
    return train, val


def subsample_classes(*splits: list[Datum], subsample: str = "all") -> list[list[Datum]]:
    """Keep the base or new half of the classes in every split, relabelled from 0.

    The ecosystem's rule: the labels present in the first split (the
    possibly few-shot train list), sorted; base = the first ceil(n/2), new =
    the rest. The same labels are kept in every split and renumbered in
    sorted order; class names are kept. ``all`` returns the splits unchanged.
    """
    if checked_subsample(subsample) == "all":
        return list(splits)

    labels = sorted({d.label for d in splits[0]})
    n_base = math.ceil(len(labels) / 2)
    chosen = labels[:n_base] if subsample == "base" else labels[n_base:]
    relabel = {old: new for new, old in enumerate(chosen)}
    return [
        [
            Datum(impath=d.impath, label=relabel[d.label], classname=d.classname)
            for d in split
            if d.label in relabel
        ]
        for split in splits
    ]


# ---------------------------------------------------------------- classes


class VLDataset(DatasetBase):
    """A Dassl dataset under ``cfg.DATASET.ROOT/<folder>``, with few-shot and base/new.

    Subclasses set ``folder`` and ``download`` (what to fetch, named in the
    error when files are missing) and implement ``read_data`` returning
    (train, val, test).
    ``test_only`` datasets (ImageNet variants) skip few-shot sampling;
    ``fewshot_val = False`` samples train only (ImageNet).
    """

    folder: str = ""
    download: str = ""
    test_only: bool = False
    fewshot_val: bool = True

    def __init__(self, cfg: Any) -> None:
        check_dataset_config(cfg)  # fail on a bad key before reading any files
        self.dataset_dir = os.path.join(dataset_root(cfg), self.folder)
        train, val, test = self.read_data()

        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1 and not self.test_only:
            if self.fewshot_val:
                train, val = sample_few_shot(self, train, val, num_shots, cfg.SEED, self.dataset_dir)
            else:
                train, _ = sample_few_shot(self, train, None, num_shots, cfg.SEED, self.dataset_dir)

        train, val, test = subsample_classes(train, val, test, subsample=subsample_mode(cfg))
        super().__init__(train_x=train, val=val, test=test)

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        """Read the full (train, val, test) lists from ``self.dataset_dir``."""
        raise NotImplementedError

    def missing_hint(self, what: str | None = None) -> str:
        """What to do about a missing file: download ``what`` (default: the whole dataset)."""
        return coop_hint(what or self.download)


class SplitFileDataset(VLDataset):
    """A dataset described by a CoOp split file ``<folder>/<split_file>``.

    Image paths in the split file are relative to ``<folder>/<image_folder>``
    (``image_folder = ""``: relative to the dataset folder itself).
    """

    image_folder: str = ""
    split_file: str = ""

    def read_data(self) -> tuple[list[Datum], list[Datum], list[Datum]]:
        require_dir(self.dataset_dir, self.missing_hint())
        split_path = os.path.join(self.dataset_dir, self.split_file)
        require_file(split_path, self.missing_hint(self.split_file))
        image_dir = require_dir(os.path.join(self.dataset_dir, self.image_folder), self.missing_hint())
        return read_split(split_path, image_dir)
