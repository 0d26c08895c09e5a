"""CoOp as a Dassl trainer (the model is ``llamp.baselines.coop``), and what CoCoOp and KgCoOp share with it."""
from __future__ import annotations

import yaml
from dassl.engine import TRAINER_REGISTRY

from llamp.baselines.coop import CoOp as CoOpModel
from llamp.baselines.coop import CoOpConfig
from llamp.clip.loading import LoadedCLIP
from llamp.errors import ConfigError

from .checkpoint import load_checkpoint
from .config import MethodKeys
from .prompt_trainer import PromptLearningTrainer

# The learned context's keys (llamp.baselines.coop.CoOpConfig), shared by CoOp, CoCoOp and KgCoOp; the
# releases call class_specific CSC.
CONTEXT_ALIASES = {"class_specific": "CSC"}
COOP_KEYS = MethodKeys("COOP", CoOpConfig, CONTEXT_ALIASES)


class ContextTrainer(PromptLearningTrainer):
    """What the CoOp-family trainers share: the learned context's model built from the config, and
    class-specific contexts refused for classes they were not learned on. A subclass names its model
    class and its keys (``method_keys``) and what else the model takes."""

    model_class: type[CoOpModel] = CoOpModel
    method_keys = COOP_KEYS

    @property
    def key_prefix(self) -> str:
        return f"TRAINER.{self.config_node}"

    def model_inputs(self) -> tuple:
        """What the model takes after its config (KgCoOp: the hand-crafted templates)."""
        return ()

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> CoOpModel:
        c = self.trainer_cfg
        config = self.method_keys.config(c)
        model = self.model_class(clip.model, clip.tokenizer, classnames, config, *self.model_inputs())
        p = model.prompts
        init = c.CTX_INIT.strip() or "random"
        print(f"{type(self).__name__}: {p.n_ctx} context tokens (init: {init}), "
              f"{'class-specific' if p.class_specific else 'unified'} context, class token at the "
              f"{p.class_token_position}, {p.num_classes} classes")
        return model

    def restore_state(self, name, state, path):
        if self.trainer_cfg.CSC:
            self.check_checkpoint_classes(path)
        super().restore_state(name, state, path)

    def check_checkpoint_classes(self, path: str) -> None:
        """A class-specific context belongs to the classes it was trained on: refuse any others."""
        saved = load_checkpoint(path).get("config")
        if not saved:
            return  # no record of the training classes: the shape check in restore_state still applies
        trained = (yaml.safe_load(saved) or {}).get("DATASET", {})
        theirs = (trained.get("NAME"), trained.get("SUBSAMPLE_CLASSES"))
        ours = (self.cfg.DATASET.NAME, self.cfg.DATASET.SUBSAMPLE_CLASSES)
        if theirs != ours:
            raise ConfigError(
                f"{self.key_prefix}.CSC is True: {path} holds one context per class of {theirs[0]} "
                f"(SUBSAMPLE_CLASSES {theirs[1]}), which cannot be used for the classes of {ours[0]} "
                f"(SUBSAMPLE_CLASSES {ours[1]}); class-specific contexts do not transfer to other classes. "
                f"Evaluate on the training classes, or train with {self.key_prefix}.CSC False")


@TRAINER_REGISTRY.register()
class CoOp(ContextTrainer):
    """CoOp: learned context words, cross-entropy only."""
