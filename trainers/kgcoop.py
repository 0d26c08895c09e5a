"""KgCoOp as a Dassl trainer: the model is ``llamp.baselines.kgcoop``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.baselines.kgcoop import KgCoOp as KgCoOpModel
from llamp.baselines.kgcoop import KgCoOpConfig

from .config import MethodKeys
from .coop import CONTEXT_ALIASES, ContextTrainer


def kgcoop_trainer_keys(c: CN) -> None:
    """TRAINER.KGCOOP's keys beyond CoOp's context."""
    # The hand-crafted prompts: empty (None), our wording in llamp/templates/zero_shot.json; a list of
    # templates with one '{}' each; or a JSON file, a list or dataset names (and "default") mapped to lists.
    c.TEMPLATES = None
    # False: the first of the dataset's TEMPLATES (a single prompt, as the release); True: the mean over all.
    c.ENSEMBLE = False


KGCOOP_KEYS = MethodKeys("KGCOOP", KgCoOpConfig, CONTEXT_ALIASES, kgcoop_trainer_keys)


@TRAINER_REGISTRY.register()
class KgCoOp(ContextTrainer):
    """KgCoOp: CoOp plus the distance to the hand-crafted prompts' features as a regulariser."""

    model_class, method_keys = KgCoOpModel, KGCOOP_KEYS

    def model_inputs(self) -> tuple[list[str]]:
        print(f"KgCoOp hand-crafted prompts: {self.templates_line()}")
        return (self.templates.templates,)
