"""A training run's random streams, derived from cfg.SEED alone.

Dassl seeds python, numpy and torch once; the few-shot sample is then drawn
from those streams (only when ``split_fewshot/`` holds no cached sample), the
model is initialised from what follows, and training goes on from there; with
loader workers, augmentation draws from per-worker streams instead. So one
seed gave different runs depending on the few-shot cache and the worker
count, and a resumed run could not continue where the first one stopped.

Here each consumer gets its own stream, seeded from (SEED, what, when):

* model initialisation: ``(SEED, "model")``, right after the data is built;
* epoch e (data order, template sampling, dropout): ``(SEED, "epoch", e)``
  before it starts, so a run resumed at epoch e continues exactly as an
  uninterrupted one (its model, optimiser and schedule come from the checkpoint);
* the augmentation of training image i in epoch e: ``(SEED, "augment", e, i)``,
  drawn inside the loader, so it is the same in the main process and in any
  worker.

The few-shot sample itself still comes from Dassl's streams right after
``set_random_seed(SEED)``, as everywhere in the ecosystem: same files, same
seed, same samples. A negative SEED (no fixed seed) leaves all of this off.
"""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch
from dassl.data.data_manager import DatasetWrapper


def derived_seed(seed: int, *keys: object) -> int:
    """A 32-bit seed for the stream named by ``keys`` (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (torch: CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededAugmentation(DatasetWrapper):
    """Dassl's dataset wrapper whose training images are augmented from their own seeded stream.

    ``seed`` (None: off) and ``epoch`` are set by the trainer before each epoch's
    loader iterator is created, so workers started for that epoch see them too.
    The global generators are restored afterwards: drawing an image changes no
    other stream.
    """

    seed: int | None = None
    epoch: int = 0

    def __getitem__(self, idx):
        if self.seed is None or not self.is_train:
            return super().__getitem__(idx)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):  # torchvision draws from torch's CPU generator
            stream = derived_seed(self.seed, "augment", self.epoch, idx)
            random.seed(stream)
            np.random.seed(stream)
            torch.random.default_generator.manual_seed(stream)
            try:
                return super().__getitem__(idx)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


def use_deterministic_algorithms() -> None:
    """TRAIN.DETERMINISTIC: bit-identical reruns on CUDA, at a cost in speed.

    cuDNN autotuning goes off and PyTorch picks deterministic kernels (some
    slower; an operation that has none raises instead of running). cuBLAS needs
    a fixed workspace for this, set here unless the user set one.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
