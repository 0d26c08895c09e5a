"""CoCoOp as a Dassl trainer: the model is ``llamp.baselines.cocoop``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY

from llamp.baselines.cocoop import CoCoOp as CoCoOpModel
from llamp.baselines.cocoop import CoCoOpConfig

from .config import MethodKeys
from .coop import CONTEXT_ALIASES, ContextTrainer

COCOOP_KEYS = MethodKeys("COCOOP", CoCoOpConfig, CONTEXT_ALIASES)


@TRAINER_REGISTRY.register()
class CoCoOp(ContextTrainer):
    """CoCoOp: CoOp's context plus a per-image bias from a meta-net; cross-entropy only."""

    model_class, method_keys = CoCoOpModel, COCOOP_KEYS
