"""MaPLe as a Dassl trainer: the prompts live in ``llamp.baselines.maple``; the loop is ``PromptLearningTrainer``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from torch import nn
from yacs.config import CfgNode as CN

from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.clip.loading import LoadedCLIP

from .config import MethodKeys, config_defaults
from .prompt_trainer import PromptLearningTrainer

MAPLE_KEYS = MethodKeys(MaPLeConfig)  # the release's key names: its YAML files merge unchanged


@config_defaults
def add_maple_config(cfg: CN) -> None:
    cfg.TRAINER.MAPLE = MAPLE_KEYS.node()  # PREC: the reference configs use fp16, as the release


@TRAINER_REGISTRY.register()
class MaPLe(PromptLearningTrainer):
    """MaPLe: deep text prompts, coupled to vision prompts by a linear map per depth."""

    method_keys = MAPLE_KEYS

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> nn.Module:
        config = self.method_keys.config(self.trainer_cfg)
        return MaPLePromptLearner(clip.model, clip.tokenizer, classnames, config)
