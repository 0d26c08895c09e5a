"""PromptSRC as a Dassl trainer: the model lives in ``llamp.baselines.promptsrc``; this file adds
the config and Gaussian prompt aggregation (GPA) over epochs through Dassl's epoch hooks."""
from __future__ import annotations

import os

import torch
from dassl.engine import TRAINER_REGISTRY
from torch import nn
from yacs.config import CfgNode as CN

from llamp.atomic_files import write_atomic
from llamp.baselines.promptsrc import (GaussianPromptAggregation, PromptSRCConfig, PromptSRCPromptLearner,
                                       gpa_weights)
from llamp.clip.loading import LoadedCLIP

from .checkpoint import load_checkpoint
from .config import MethodKeys
from .prompt_trainer import PromptLearningTrainer


def promptsrc_trainer_keys(c: CN) -> None:
    """TRAINER.PROMPTSRC's keys beyond the method's: the templates and GPA's schedule."""
    # Frozen CLIP's text targets average over these templates (textual diversity). Empty (None): our
    # wording, the dataset's list in llamp/templates/zero_shot.json (the release averages a generic set of
    # 60 for every dataset); a list of templates with one '{}' each; or a JSON file, a list or dataset
    # names (and "default") mapped to lists.
    c.TEMPLATES = None
    # GPA: epoch e (1-based) weighs N(e; GPA_MEAN, GPA_STD), normalised over 1..OPTIM.MAX_EPOCH.
    c.GPA_MEAN = 15
    c.GPA_STD = 1


# Key names and types as in the PromptSRC release (integer weights and GPA parameters), so its YAML files
# merge unchanged (PREC: the reference configs use fp16, as the release).
PROMPTSRC_KEYS = MethodKeys("PROMPTSRC", PromptSRCConfig, trainer_keys=promptsrc_trainer_keys)


def gpa_state_file(folder: str, epoch: int) -> str:
    """The aggregation state saved next to an intermediate checkpoint (for --resume)."""
    return os.path.join(folder, f"gpa.pth.tar-{epoch}")


@TRAINER_REGISTRY.register()
class PromptSRC(PromptLearningTrainer):
    """PromptSRC: independent deep text/vision prompts, self-regulated by frozen CLIP, aggregated over epochs."""

    method_keys = PROMPTSRC_KEYS
    field_keys = {"gpa_std": "GPA_STD"}

    def check_cfg(self, cfg):
        super().check_cfg(cfg)  # precision; the templates (every one: PromptSRC has no ENSEMBLE key)
        c = cfg.TRAINER.PROMPTSRC
        gpa_weights(c.GPA_MEAN, c.GPA_STD, cfg.OPTIM.MAX_EPOCH)  # a bad GPA_STD fails before any loading

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> nn.Module:
        config = self.method_keys.config(self.trainer_cfg)
        print(f"PromptSRC: text targets from frozen CLIP averaged over {self.templates_line()}")
        return PromptSRCPromptLearner(clip.model, clip.tokenizer, classnames, self.templates.templates, config)

    def build_model(self):
        super().build_model()
        c = self.trainer_cfg
        self.gpa = GaussianPromptAggregation.from_config(c.GPA_MEAN, c.GPA_STD, self.max_epoch)
        print("PromptSRC: GPA weights per epoch " + " ".join(f"{w:.3f}" for w in self.gpa.weights))

    # ---- Gaussian prompt aggregation ---------------------------------------
    def prompt_tensors(self) -> dict[str, torch.Tensor]:
        """The learned prompts now (every trainable tensor of the model)."""
        return {k: p.detach() for k, p in self.model.named_parameters() if p.requires_grad}

    def after_epoch(self):
        self.gpa.add(self.epoch, self.prompt_tensors())
        if self.epoch + 1 == self.max_epoch:
            # Before Dassl's hook saves the last-epoch checkpoint and after_train tests:
            # both then see the aggregated prompts.
            self.use_aggregated_prompts()
        super().after_epoch()

    @torch.no_grad()
    def use_aggregated_prompts(self) -> None:
        if not self.gpa.complete:
            print(f"PromptSRC: GPA over epochs {[e + 1 for e in sorted(self.gpa.epochs)]} only "
                  "(weights renormalised over them)")
        print("PromptSRC: the model now holds the Gaussian-weighted prompts (GPA) for saving and evaluation")
        params = dict(self.model.named_parameters())
        for name, value in self.gpa.aggregate().items():
            params[name].copy_(value)

    # ---- resuming: the running aggregate travels next to intermediate checkpoints ----
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        # before the checkpoint, whose pointer file then names an epoch whose aggregate is on disk
        if not model_name and epoch + 1 < self.max_epoch and self.gpa.epochs:
            state = self.gpa.state_dict()
            write_atomic(gpa_state_file(os.path.join(directory, self.model_name), epoch + 1),
                         lambda tmp: torch.save(state, tmp))
        super().save_model(epoch, directory, is_best, val_result, model_name)

    def resume_model_if_exist(self, directory):
        start = super().resume_model_if_exist(directory)
        if 0 < start < self.max_epoch:
            path = gpa_state_file(os.path.join(directory, self.model_name), start)
            if os.path.isfile(path):
                self.gpa.load_state_dict(load_checkpoint(path))
            else:
                print(f"PromptSRC: no aggregation state at {path}: GPA covers epochs {start + 1}.."
                      f"{self.max_epoch} only")
        return start
