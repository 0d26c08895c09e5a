"""MaPLe as a Dassl trainer: the prompts live in ``llamp.baselines.maple``; the loop is ``PromptLearningTrainer``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from torch import nn
from yacs.config import CfgNode as CN

from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.clip.loading import LoadedCLIP

from .config import config_defaults, method_config, trainer_node
from .prompt_trainer import PromptLearningTrainer


@config_defaults
def add_maple_config(cfg: CN) -> None:
    # Key names as in the MaPLe release, so its YAML files merge unchanged.
    c = cfg.TRAINER.MAPLE = trainer_node()  # PREC: the reference configs use fp16, as the release
    c.N_CTX = 2  # learned context tokens, shared by both towers through the couplings
    c.CTX_INIT = "a photo of a"  # its first N_CTX tokens initialise the context; "" (or N_CTX > 4) = random
    c.PROMPT_DEPTH = 9  # J: layers of each tower that receive prompts (1 = shallow MaPLe)


@TRAINER_REGISTRY.register()
class MaPLe(PromptLearningTrainer):
    """MaPLe: deep text prompts, coupled to vision prompts by a linear map per depth."""

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> nn.Module:
        config = method_config(MaPLeConfig, self.trainer_cfg)
        return MaPLePromptLearner(clip.model, clip.tokenizer, classnames, config)
