"""KgCoOp as a Dassl trainer: the model is ``llamp.baselines.kgcoop``."""
from __future__ import annotations

from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.baselines.kgcoop import KgCoOp as KgCoOpModel
from llamp.baselines.kgcoop import KgCoOpConfig

from .config import config_defaults
from .coop import ContextTrainer, context_config_node


@config_defaults
def add_kgcoop_config(cfg: CN) -> None:
    c = cfg.TRAINER.KGCOOP = context_config_node()
    # lambda on the mean squared L2 distance between normalised learned and hand-crafted text
    # features. 4.0 reproduces the authors' release, which puts 8.0 on (1 - cos) = distance / 2.
    c.WEIGHT = 4.0
    # The hand-crafted prompts: empty (None), our wording in llamp/templates/zero_shot.json; a list of
    # templates with one '{}' each; or a JSON file, a list or dataset names (and "default") mapped to lists.
    c.TEMPLATES = None
    # False: the first of the dataset's TEMPLATES (a single prompt, as the release); True: the mean over all.
    c.ENSEMBLE = False


@TRAINER_REGISTRY.register()
class KgCoOp(ContextTrainer):
    """KgCoOp: CoOp plus the distance to the hand-crafted prompts' features as a regulariser."""

    model_class, config_class = KgCoOpModel, KgCoOpConfig

    def model_inputs(self) -> tuple[list[str]]:
        print(f"KgCoOp hand-crafted prompts: {self.templates_line()}")
        return (self.templates.templates,)
