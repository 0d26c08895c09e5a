"""The output layout the protocol scripts write (``scripts/common.sh``), read back.

    base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>   trained on the base classes, tested on them
    base2new/test_new/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>     that model tested on the new classes
    few_shot/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>              all classes, K shots
    xd/train/imagenet/shots_<K>/<Trainer>/<cfg>/seed<k>               trained on ImageNet, tested on it
    xd/test/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>               that model tested on another dataset

A run folder is recognised by its last seven path components, so the tree may
sit anywhere (``output/``, ``/scratch/me/output``, ...).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .logs import read_run

BASE2NEW, FEW_SHOT, XD = "base2new", "few_shot", "xd"
PROTOCOLS = (BASE2NEW, FEW_SHOT, XD)
# stage folder(s) between the protocol folder and <dataset>
TRAIN_BASE, TEST_NEW, XD_TRAIN, XD_TEST = "train_base", "test_new", "train", "test"
_STAGES = {BASE2NEW: (TRAIN_BASE, TEST_NEW), XD: (XD_TRAIN, XD_TEST), FEW_SHOT: ("",)}

_SEED = re.compile(r"^seed(\d+)$")
_SHOTS = re.compile(r"^shots_(-?\d+)$")


@dataclass(frozen=True)
class Run:
    protocol: str  # base2new | few_shot | xd
    stage: str  # train_base | test_new (base2new), train | test (xd), "" (few_shot)
    dataset: str
    shots: int
    trainer: str
    config: str
    seed: int
    folder: str
    accuracy: float | None  # None: no result line in the log (yet)
    log: str | None  # the log file the accuracy was read from (or the one without a result)

    @property
    def method(self) -> tuple[str, str, int]:
        """What a table row stands for: one trainer with one config and one shot count."""
        return (self.trainer, self.config, self.shots)


def parse_run_folder(folder: str) -> dict | None:
    """The fields encoded in a run folder's path, or None if it is not in the layout."""
    parts = os.path.normpath(os.path.abspath(folder)).split(os.sep)
    if len(parts) < 7:
        return None
    seed, config, trainer, shots, dataset = parts[-1], parts[-2], parts[-3], parts[-4], parts[-5]
    seed_match, shots_match = _SEED.match(seed), _SHOTS.match(shots)
    if not seed_match or not shots_match:
        return None
    if parts[-6] == FEW_SHOT:
        protocol, stage = FEW_SHOT, ""
    elif parts[-7] in (BASE2NEW, XD) and parts[-6] in _STAGES[parts[-7]]:
        protocol, stage = parts[-7], parts[-6]
    else:
        return None
    return dict(protocol=protocol, stage=stage, dataset=dataset, shots=int(shots_match.group(1)),
                trainer=trainer, config=config, seed=int(seed_match.group(1)))


def find_runs(root: str) -> tuple[list[Run], list[str]]:
    """Every run folder under ``root`` with its result, and the ``seed*`` folders outside the layout."""
    runs, unrecognised = [], []
    for folder, subfolders, _ in os.walk(root):
        subfolders.sort()
        if not _SEED.match(os.path.basename(folder)):
            continue
        subfolders[:] = []  # a run folder's own sub-folders hold checkpoints, not runs
        fields = parse_run_folder(folder)
        if fields is None:
            unrecognised.append(folder)
            continue
        result = read_run(folder)
        runs.append(Run(folder=folder, accuracy=result.accuracy, log=result.log, **fields))
    return runs, unrecognised
