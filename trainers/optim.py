"""Learning-rate schedules built from Dassl's OPTIM keys.

Dassl's own warm-up schedulers pass ``verbose`` positionally to torch's
``_LRScheduler`` (a TypeError since torch 2.2) and pickle a nested scheduler
object into checkpoints (which ``torch.load(weights_only=True)`` refuses).
This module gives the same schedules as one ``LambdaLR``: plain state, no
nested objects. Like Dassl, it is stepped once per epoch.
"""
from __future__ import annotations

import math

import torch
from yacs.config import CfgNode

from llamp.errors import ConfigError

SCHEDULERS = ("single_step", "multi_step", "cosine")
WARMUP_TYPES = ("constant", "linear")


def lr_at_epoch(epoch: int, base_lr: float, optim_cfg: CfgNode) -> float:
    """The learning rate of a group with ``base_lr`` during ``epoch`` (0-based)."""
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup > 0 and epoch < warmup:
        if optim_cfg.WARMUP_TYPE == "constant":
            return optim_cfg.WARMUP_CONS_LR
        if epoch == 0:  # linear warm-up starts from WARMUP_MIN_LR, then ramps up
            return optim_cfg.WARMUP_MIN_LR
        return base_lr * epoch / warmup
    # With WARMUP_RECOUNT the main schedule starts counting after the warm-up.
    t = epoch - warmup if (warmup > 0 and optim_cfg.WARMUP_RECOUNT) else epoch
    name = optim_cfg.LR_SCHEDULER
    if name == "cosine":
        floor = min(optim_cfg.MIN_LR, base_lr)
        return floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * t / optim_cfg.MAX_EPOCH))
    stepsize = optim_cfg.STEPSIZE
    if name == "single_step":
        step = stepsize[-1] if isinstance(stepsize, (list, tuple)) else stepsize
        step = step if step > 0 else optim_cfg.MAX_EPOCH
        return base_lr * optim_cfg.GAMMA ** (t // step)
    return base_lr * optim_cfg.GAMMA ** sum(t >= m for m in stepsize)  # multi_step


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: CfgNode) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch scheduler following ``lr_at_epoch`` for every parameter group."""
    if optim_cfg.LR_SCHEDULER not in SCHEDULERS:
        raise ConfigError(f"OPTIM.LR_SCHEDULER must be one of {SCHEDULERS}, got {optim_cfg.LR_SCHEDULER!r}")
    if optim_cfg.WARMUP_EPOCH > 0 and optim_cfg.WARMUP_TYPE not in WARMUP_TYPES:
        raise ConfigError(f"OPTIM.WARMUP_TYPE must be one of {WARMUP_TYPES}, got {optim_cfg.WARMUP_TYPE!r}")
    if optim_cfg.LR_SCHEDULER == "multi_step" and not isinstance(optim_cfg.STEPSIZE, (list, tuple)):
        raise ConfigError("OPTIM.STEPSIZE must be a list of epochs for multi_step")

    def multiplier(base_lr: float):
        return lambda epoch: lr_at_epoch(epoch, base_lr, optim_cfg) / base_lr

    lambdas = [multiplier(group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
