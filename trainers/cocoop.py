"""CoCoOp as a Dassl trainer: the model is ``llamp.baselines.cocoop``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.baselines.cocoop import CoCoOp as CoCoOpModel
from llamp.baselines.cocoop import CoCoOpConfig

from .config import config_defaults
from .coop import ContextTrainer, context_config_node


@config_defaults
def add_cocoop_config(cfg: CN) -> None:
    c = cfg.TRAINER.COCOOP = context_config_node()
    c.META_NET_REDUCTION = 16  # meta-net: image feature width -> width // this -> text width


@TRAINER_REGISTRY.register()
class CoCoOp(ContextTrainer):
    """CoCoOp: CoOp's context plus a per-image bias from a meta-net; cross-entropy only."""

    model_class, config_class = CoCoOpModel, CoCoOpConfig
