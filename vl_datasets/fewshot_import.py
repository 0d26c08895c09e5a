"""Importing a CoOp / MaPLe few-shot pickle (``split_fewshot/shot_K-seed_S.pkl``) into our JSON cache.

The ecosystem's datasets pickle ``{"train": [Datum, ...], "val": [Datum, ...]}``
(ImageNet: ``train`` only) with absolute image paths of the machine that drew
the sample. After an import, ``train.py --seed S DATASET.NUM_SHOTS K`` reads
exactly those images from ``<dataset>/split_fewshot/shot_K-seed_S.json``,
whatever order our file lists have (ImageNet: their ``os.listdir`` order).

A pickle can run arbitrary code while it is loaded. It is therefore read by
an unpickler that admits one class, Dassl's ``Datum`` — unpickled into a bare
attribute holder of our own, so nothing of Dassl runs either — and builds
lists, dicts, strings and numbers from the file's opcodes; any other class or
function named in the file stops the import before it is called.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dassl.data.datasets import DATASET_REGISTRY

from llamp.errors import ConfigError, MissingFileError

from .common import VLDataset, fewshot_cache_path, make_datum, read_datum_lists, write_datum_lists
from .config import dataset_config

# Where Dassl defines Datum (what pickles record), and the package that re-exports it.
DATUM_GLOBALS = {("dassl.data.datasets.base_dataset", "Datum"), ("dassl.data.datasets", "Datum")}
FILE_NAME = re.compile(r"shot_(\d+)-seed_(\d+)\.pkl$")


class PickledDatum:
    """A Datum as unpickled here: only the attributes the file sets (``_impath``, ``_label``, ...)."""


class RefusedGlobal(Exception):
    """The pickle names a class or function other than Datum (``module.name``)."""


class DatumUnpickler(pickle.Unpickler):
    """Admits Dassl's Datum (as :class:`PickledDatum`) and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in DATUM_GLOBALS:
            return PickledDatum
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal(f"persistent id {pid!r}")


def load_fewshot_pickle(path: str) -> Any:
    """The pickle's content, read with :class:`DatumUnpickler`; a refused global is one ConfigError line."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return DatumUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as e:
        raise ConfigError(f"{path} names {e}, which is not Dassl's Datum: refused without loading it (a pickle "
                          "can run code; a few-shot file holds only Datum objects in lists and a dict)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable few-shot pickle ({type(e).__name__}: {e})") from None


@dataclass
class Record:
    """One sampled image as the pickle stores it."""

    impath: str  # absolute, on the machine that drew the sample
    label: int
    classname: str


def datum_records(content: Any, keys: tuple[str, ...], path: str) -> dict[str, list[Record]]:
    """``{key: [Record]}`` from the unpickled ``{"train": [Datum], "val": [Datum]}``."""
    if not isinstance(content, dict):
        raise ConfigError(f"{path} holds a {type(content).__name__}, not the few-shot dict {{'train': [...]}}")
    out = {}
    for key in keys:
        items = content.get(key)
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{path} has no {key!r} list of Datum objects (keys: {sorted(map(str, content))})")
        records = []
        for item in items:
            state = vars(item) if isinstance(item, PickledDatum) else None
            impath, label, classname = (state or {}).get("_impath"), (state or {}).get("_label"), \
                (state or {}).get("_classname")
            if not (isinstance(impath, str) and isinstance(label, int) and not isinstance(label, bool)
                    and isinstance(classname, str)):
                raise ConfigError(f"{path}: a {key!r} entry is not a Datum with an image path, an integer label "
                                  f"and a class name ({state if state is not None else type(item).__name__!r})")
            records.append(Record(impath, label, classname))
        out[key] = records
    return out


def old_dataset_dir(impaths: list[str], folder: str, given: str | None, path: str) -> str:
    """The dataset folder on the machine that drew the sample: ``given`` (``--from``) or the part of the
    first image path up to its last component named ``folder`` (e.g. ``/home/me/data/oxford_pets``)."""
    if given:
        old = os.path.normpath(given)
    else:
        parts = impaths[0].split("/")
        at = [i for i, part in enumerate(parts[:-1]) if part == folder]
        if not os.path.isabs(impaths[0]) or not at:
            raise ConfigError(f"{path}: cannot tell which part of its image paths (e.g. {impaths[0]}) is the "
                              f"dataset folder {folder!r}: give that folder as it was with --from DIR")
        old = "/".join(parts[:at[-1] + 1])
    outside = [p for p in impaths if not p.startswith(old.rstrip("/") + "/")]
    if outside:
        raise ConfigError(f"{path}: {len(outside)} image path(s) are not under {old} (e.g. {outside[0]}): give "
                          "the dataset folder as it was with --from DIR")
    return old


@dataclass
class ImportReport:
    target: str  # the JSON written (or found up to date)
    counts: dict[str, int]
    old_dir: str
    new_dir: str
    written: bool


def import_fewshot(pickle_path: str, root: str, dataset_config_file: str, shots: int | None = None,
                   seed: int | None = None, old_dir: str | None = None, force: bool = False) -> ImportReport:
    """Convert one pickle into the JSON few-shot cache of the dataset under ``root``; see the module doc."""
    if not os.path.isfile(pickle_path):
        raise MissingFileError(f"{pickle_path} does not exist")
    match = FILE_NAME.search(os.path.basename(pickle_path))
    shots = shots if shots is not None else (int(match.group(1)) if match else None)
    seed = seed if seed is not None else (int(match.group(2)) if match else None)
    if shots is None or seed is None:
        raise ConfigError(f"{pickle_path}: the name is not shot_K-seed_S.pkl; give --shots K and --seed S")
    if shots < 1:
        raise ConfigError(f"--shots must be at least 1, got {shots}")

    cfg = dataset_config(root, dataset_config_file)
    dataset_class = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if not issubclass(dataset_class, VLDataset) or dataset_class.test_only:
        raise ConfigError(f"{cfg.DATASET.NAME} ({dataset_config_file}) has no few-shot training samples to import")
    keys = ("train", "val") if dataset_class.fewshot_val else ("train",)

    records = datum_records(load_fewshot_pickle(pickle_path), keys, pickle_path)
    dataset = dataset_class(cfg)  # the full lists, read as train.py reads them (checks the files are there)
    new_dir = os.path.abspath(dataset.dataset_dir)
    old = old_dataset_dir([r.impath for key in keys for r in records[key]], dataset_class.folder, old_dir,
                          pickle_path)
    ours = {"train": dataset.train_x, "val": dataset.val}
    lists = {}
    for key in keys:
        limit = shots if key == "train" else min(shots, 4)
        per_class = Counter(r.label for r in records[key])
        label, most = per_class.most_common(1)[0]
        if most > limit:
            raise ConfigError(f"{pickle_path}: its {key!r} list holds {most} images of label {label}, more than a "
                              f"{shots}-shot sample ({limit}): is --shots right?")
        known = {os.path.relpath(d.impath, new_dir): d for d in ours[key]}
        items = []
        for r in records[key]:
            rel = os.path.relpath(r.impath, old)
            mine = known.get(rel)
            if mine is None:
                raise ConfigError(f"{pickle_path}: {r.impath} (here {os.path.join(new_dir, rel)}) is not in "
                                  f"{cfg.DATASET.NAME}'s {key} list under {new_dir}: the sample was drawn from "
                                  "other split files, or --root / --from point elsewhere")
            if (mine.label, mine.classname) != (r.label, r.classname):
                raise ConfigError(f"{pickle_path}: {rel} is label {r.label} ({r.classname!r}) there but "
                                  f"{mine.label} ({mine.classname!r}) here: the sample was drawn from other "
                                  "split files or class lists")
            items.append(make_datum(os.path.join(new_dir, rel), r.label, r.classname, pickle_path))
        lists[key] = items

    target = fewshot_cache_path(new_dir, shots, seed)
    counts = {key: len(items) for key, items in lists.items()}
    if os.path.isfile(target):
        existing = read_datum_lists(target, new_dir, keys)
        same = all([(d.impath, d.label, d.classname) for d in existing[key]]
                   == [(d.impath, d.label, d.classname) for d in lists[key]] for key in keys)
        if same:
            return ImportReport(target, counts, old, new_dir, written=False)
        if not force:
            raise ConfigError(f"{target} already holds another sample for {shots} shots and seed {seed}: "
                              "--force replaces it")
    write_datum_lists(target, lists, new_dir)
    return ImportReport(target, counts, old, new_dir, written=True)

