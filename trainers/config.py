"""Config defaults: shared keys here, each trainer's own keys next to the trainer.

A trainer module declares its defaults with ``@config_defaults`` on a function
that adds ``cfg.TRAINER.<NAME>``; ``extend_cfg`` applies every declared
function. Dassl's ``clean_cfg`` later drops the nodes of the other trainers.
A method's library config is filled from its node by :func:`method_config`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from yacs.config import CfgNode as CN

import vl_datasets

_TRAINER_DEFAULTS: list[Callable[[CN], None]] = []


def config_defaults(add_defaults: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator: register a function that adds a trainer's config defaults."""
    _TRAINER_DEFAULTS.append(add_defaults)
    return add_defaults


def trainer_node() -> CN:
    """A trainer's node TRAINER.<NAME>, holding the key every trainer reads (checked in ClipTrainer.check_cfg)."""
    c = CN()
    # fp32 | fp16 (frozen weights in fp16, autocast) | bf16 (the same in bf16) | amp (fp32 weights, autocast);
    # LLaMP takes no fp16 (the LLM's activations overflow it)
    c.PREC = "fp32"
    return c


def add_shared_config(cfg: CN) -> None:
    """Keys every trainer here reads, beyond Dassl's defaults."""
    # Where the CLIP weights are: a Hugging Face folder, an OpenAI .pt file or a hub
    # name in the local cache. Empty: look for MODEL.BACKBONE.NAME in the usual caches.
    cfg.MODEL.BACKBONE.PATH = ""
    # Floor of the cosine schedule (Dassl's cosine decays to 0).
    cfg.OPTIM.MIN_LR = 0.0
    # LR_SCHEDULER "llamp_cosine", the LLaMP release's schedule (trainers/optim.py):
    # per-group floor max(MIN_LR * group LR / LR, MIN_LR_ABSOLUTE); the first
    # WARMUP_FRACTION of epoch 0 at the floor; cosine over max(MAX_EPOCH, MIN_PERIOD) epochs.
    cfg.OPTIM.LLAMP_COSINE = CN()
    cfg.OPTIM.LLAMP_COSINE.MIN_LR_ABSOLUTE = 5e-6
    cfg.OPTIM.LLAMP_COSINE.WARMUP_FRACTION = 0.1
    cfg.OPTIM.LLAMP_COSINE.MIN_PERIOD = 20
    # CUDA: PyTorch's deterministic algorithms, for bit-identical reruns (slower; see
    # trainers/reproducibility.py). On CPU runs with one seed are identical anyway.
    cfg.TRAIN.DETERMINISTIC = False
    vl_datasets.add_dataset_config(cfg)


def extend_cfg(cfg: CN) -> None:
    """Add the shared keys and every registered trainer's defaults to a Dassl cfg."""
    add_shared_config(cfg)
    for add_defaults in _TRAINER_DEFAULTS:
        add_defaults(cfg)


def method_config(config_class: type, node: CN, **given: Any):
    """The library's config dataclass ``config_class`` filled from a trainer's node: each field from the key
    of its name in capitals (``n_ctx`` from N_CTX), except those ``given``; fields without a key keep their
    defaults, keys without a field (PREC, TEMPLATES, ...) are the trainer's."""
    values = {f.name: node[f.name.upper()] for f in dataclasses.fields(config_class)
              if f.name not in given and f.name.upper() in node}
    return config_class(**values, **given)
