"""MaPLe as a Dassl trainer: the prompts live in ``llamp.baselines.maple``; the loop is ``PromptLearningTrainer``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from torch import nn
from yacs.config import CfgNode as CN

from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.clip.loading import LoadedCLIP

from .config import MethodKeys
from .prompt_trainer import PromptLearningTrainer

# The release's key names: its YAML files merge unchanged (PREC: the reference configs use fp16, as the release).
MAPLE_KEYS = MethodKeys("MAPLE", MaPLeConfig)


def build_maple(clip: LoadedCLIP, classnames: list[str], node: CN) -> MaPLePromptLearner:
    """MaPLe's prompt learner over ``clip`` with the hyper-parameters of the node TRAINER.MAPLE."""
    return MaPLePromptLearner(clip.model, clip.tokenizer, classnames, MAPLE_KEYS.config(node))


@TRAINER_REGISTRY.register()
class MaPLe(PromptLearningTrainer):
    """MaPLe: deep text prompts, coupled to vision prompts by a linear map per depth."""

    method_keys = MAPLE_KEYS

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> nn.Module:
        return build_maple(clip, classnames, self.trainer_cfg)
