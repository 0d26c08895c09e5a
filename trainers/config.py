"""Config defaults: shared keys here, each trainer's own keys next to the trainer.

A trainer module declares its node ``cfg.TRAINER.<NAME>``: a method's
hyper-parameters once, as the fields of its library config dataclass (default
and comment), through :class:`MethodKeys` (which turns them into the node's keys
and back, and names the keys in the library's errors); a trainer without a
method dataclass with ``@config_defaults`` on a function that adds its node.
``extend_cfg`` applies every declaration. Dassl's ``clean_cfg`` later drops the
nodes of the other trainers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping

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


@dataclass(frozen=True)
class MethodKeys:
    """A method's config dataclass as the keys of its trainer's node TRAINER.<node_name>: ``n_ctx`` is N_CTX,
    or ``aliases[field]`` where the releases' key names differ (CoOp's CSC). The dataclass holds each key's
    one declaration: its default (a tuple becomes a list, as YAML writes it) and its comment. ``trainer_keys``
    adds the keys the trainer reads beyond the method's (e.g. its LLM's path).

    Making one declares the node: ``extend_cfg`` adds it to every config."""

    node_name: str
    config_class: type
    aliases: Mapping[str, str] = field(default_factory=dict)
    trainer_keys: Callable[[CN], None] | None = None

    def __post_init__(self):
        config_defaults(self.add_node)

    def add_node(self, cfg: CN) -> None:
        cfg.TRAINER[self.node_name] = self.node()

    def key(self, name: str) -> str:
        return self.aliases.get(name, name.upper())

    def node(self) -> CN:
        """The trainer's node: PREC (:func:`trainer_node`), a key per field at its default, then the trainer's."""
        c = trainer_node()
        for f in dataclasses.fields(self.config_class):
            default = _default(f)
            c[self.key(f.name)] = list(default) if isinstance(default, tuple) else default
        if self.trainer_keys is not None:
            self.trainer_keys(c)
        return c

    def config(self, node: CN):
        """The dataclass filled from the trainer's node."""
        values = {}
        for f in dataclasses.fields(self.config_class):
            value = node[self.key(f.name)]
            values[f.name] = tuple(value) if isinstance(_default(f), tuple) else value
        return self.config_class(**values)

    def names(self) -> dict[str, str]:
        """Each field's full key (e.g. TRAINER.MAPLE.N_CTX), as the library's errors name them."""
        return {f.name: f"TRAINER.{self.node_name}.{self.key(f.name)}" for f in dataclasses.fields(self.config_class)}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
