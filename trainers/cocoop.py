"""CoCoOp as a Dassl trainer: the model is ``llamp.baselines.cocoop``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.baselines.cocoop import CoCoOp as CoCoOpModel
from llamp.baselines.cocoop import CoCoOpConfig
from llamp.clip_loading import LoadedCLIP

from .config import config_defaults
from .coop import ContextTrainer, context_config_node, context_fields


@config_defaults
def add_cocoop_config(cfg: CN) -> None:
    c = cfg.TRAINER.COCOOP = context_config_node()
    c.META_NET_REDUCTION = 16  # meta-net: image feature width -> width // this -> text width


@TRAINER_REGISTRY.register()
class CoCoOp(ContextTrainer):
    """CoCoOp: CoOp's context plus a per-image bias from a meta-net; cross-entropy only."""

    config_node = "COCOOP"

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> CoCoOpModel:
        c = self.trainer_cfg
        config = CoCoOpConfig(**context_fields(c), meta_net_reduction=c.META_NET_REDUCTION,
                              key_prefix=self.key_prefix)
        model = CoCoOpModel(clip.model, clip.tokenizer, classnames, config)
        self.describe(model)
        return model
