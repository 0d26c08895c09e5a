"""The training loop every prompt learner shares (CoOp, CoCoOp, MaPLe, KgCoOp, PromptSRC, ...).

A method supplies ``build_prompt_learner(clip, classnames)``: a module holding
its learnable prompts (CLIP frozen inside it) with

* ``forward(images) -> logits [batch, classes]`` for evaluation, and
* ``losses(images, labels) -> ({name: weighted loss}, logits)`` for training.

This class does the rest: precision, the optimiser over the trainable tensors
only (Dassl's OPTIM keys), the per-epoch schedule, loss scaling, logging and
checkpoints under ``<output>/prompt_learner/`` as in CoOp.
"""
from __future__ import annotations

import torch
from dassl.metrics import compute_accuracy
from torch import nn

from llamp.clip.loading import LoadedCLIP

from .base import ClipTrainer
from .optim import build_optimizer


def build_prompt_optimizer(model: nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """OPTIM's optimiser over the prompt learner's trainable tensors only (frozen CLIP holds no state in it)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return build_optimizer(model, optim_cfg, param_groups=[{"params": trainable}])


class PromptLearningTrainer(ClipTrainer):
    model_name = "prompt_learner"

    def build_prompt_learner(self, clip: LoadedCLIP, classnames: list[str]) -> nn.Module:
        raise NotImplementedError

    def build_model(self):
        clip = self.load_clip()
        clip.model.requires_grad_(False)
        self.model = self.build_prompt_learner(clip, list(self.dm.dataset.classnames))
        self.model.to(self.device)
        self.cast_frozen_parameters(self.model)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print(f"{type(self).__name__}: {trainable:,} trainable parameters")
        self.optim = build_prompt_optimizer(self.model, self.cfg.OPTIM)
        self.sched = self.build_scheduler(self.optim)
        self.register_model(self.model_name, self.model, self.optim, self.sched)
        self.scaler = self.make_grad_scaler()

    def forward_backward(self, batch):
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            losses, logits = self.model.losses(images, labels)
        loss = sum(losses.values())
        self.optimization_step(loss, self.optim, scaler=self.scaler)
        summary = {"loss": loss.item()}
        if len(losses) > 1:
            summary.update({name: value.item() for name, value in losses.items()})
        summary["acc"] = compute_accuracy(logits.float(), labels)[0].item()
        self.advance_lr_schedule()
        return summary

    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            return self.model(images).float()
