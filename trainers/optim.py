"""Optimisers and learning-rate schedules built from Dassl's OPTIM keys, and the update step.

``build_optimizer`` is Dassl's, with Adam and AdamW switched to torch's fused
kernels: one pass over all tensors instead of a Python loop over them, and no
per-tensor temporaries (benchmarks/real_width.py times the step). Same update
rule, same state dict.

Dassl's own warm-up schedulers pass ``verbose`` positionally to torch's
``_LRScheduler`` (a TypeError since torch 2.2) and pickle a nested scheduler
object into checkpoints (which ``torch.load(weights_only=True)`` refuses).
This module gives the same schedules as one ``LambdaLR``: plain state, no
nested objects. Like Dassl, these are stepped once per epoch.

``llamp_cosine`` is the LLaMP release's schedule, which needs the iteration
within epoch 0: it is indexed by iteration and stepped after every one
(``steps_every_iteration``).

``optimizer_step`` is the update every trainer makes from its loss; it needs
no trainer, so the benchmarks time the same code.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from dassl.optim import build_optimizer as dassl_build_optimizer
from yacs.config import CfgNode

from llamp.errors import ConfigError

# OPTIM.NAME values Dassl builds as torch.optim.Adam / AdamW (amsgrad: Adam with amsgrad=True).
FUSED_OPTIMIZERS = ("adam", "amsgrad", "adamw")
SCHEDULERS = ("single_step", "multi_step", "cosine", "llamp_cosine")
PER_ITERATION_SCHEDULERS = ("llamp_cosine",)
WARMUP_TYPES = ("constant", "linear")


def build_optimizer(model: torch.nn.Module, optim_cfg: CfgNode,
                    param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """Dassl's optimiser for OPTIM (and ``param_groups``), Adam-family ones with fused kernels."""
    optimizer = dassl_build_optimizer(model, optim_cfg, param_groups=param_groups)
    if optim_cfg.NAME not in FUSED_OPTIMIZERS:
        return optimizer
    # Rebuilt from the groups Dassl filled in (learning rates, betas, decay), with fused on in each group.
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    accepted = inspect.signature(type(optimizer)).parameters  # defaults may hold more (AdamW: its decoupling)
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return type(optimizer)(groups, **{**defaults, "fused": True, "foreach": None})


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, max_norm: float = 0.0, scaler=None,
                   after_backward: Callable[[], None] | None = None) -> None:
    """zero_grad, backward, optional gradient clipping, step (with loss scaling if given), and the
    gradients released: held until the next backward, they would sit beside the next forward's activations.

    ``after_backward`` is called between the backward and the clipping (a benchmark times the two apart).
    """
    optimizer.zero_grad()
    (loss if scaler is None else scaler.scale(loss)).backward()
    if after_backward is not None:
        after_backward()
    if max_norm > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)  # the bound is on the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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


def llamp_lr_at_iteration(iteration: int, batches: int, base_lr: float, optim_cfg: CfgNode) -> float:
    """The LLaMP release's learning rate of a group with ``base_lr`` at ``iteration`` (0-based, global).

    Floor: ``max(MIN_LR * base_lr / LR, LLAMP_COSINE.MIN_LR_ABSOLUTE)``, so the
    main group (base OPTIM.LR) floors at MIN_LR and a slower group (LoRA)
    proportionally lower, but not below the absolute floor. Epoch 0: its first
    ``floor(batches * WARMUP_FRACTION)`` iterations at the floor, the rest at
    ``base_lr``. Epoch e >= 1: ``max(floor, base_lr * (1 + cos(pi * e / P)) / 2)``
    with ``P = max(MAX_EPOCH, LLAMP_COSINE.MIN_PERIOD)``: with fewer epochs than
    MIN_PERIOD the cosine stops part-way down, as in the release.
    """
    c = optim_cfg.LLAMP_COSINE
    floor = max(optim_cfg.MIN_LR * base_lr / optim_cfg.LR, c.MIN_LR_ABSOLUTE)
    epoch, step = divmod(iteration, batches)
    if epoch == 0:
        at_floor = math.floor(batches * c.WARMUP_FRACTION + 1e-9)  # 1e-9: 0.1 * 30 must give 3
        return floor if step < at_floor else base_lr
    period = max(optim_cfg.MAX_EPOCH, c.MIN_PERIOD)
    return max(floor, base_lr * 0.5 * (1 + math.cos(math.pi * epoch / period)))


def steps_every_iteration(optim_cfg: CfgNode) -> bool:
    """Whether the scheduler is stepped after every iteration (else once per epoch)."""
    return optim_cfg.LR_SCHEDULER in PER_ITERATION_SCHEDULERS


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: CfgNode,
                       batches_per_epoch: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler following ``lr_at_epoch`` (per epoch) or ``llamp_lr_at_iteration`` for every group.

    ``batches_per_epoch`` is needed by the per-iteration schedule only.
    """
    if optim_cfg.LR_SCHEDULER not in SCHEDULERS:
        raise ConfigError(f"OPTIM.LR_SCHEDULER must be one of {SCHEDULERS}, got {optim_cfg.LR_SCHEDULER!r}")
    if optim_cfg.WARMUP_EPOCH > 0 and optim_cfg.WARMUP_TYPE not in WARMUP_TYPES:
        raise ConfigError(f"OPTIM.WARMUP_TYPE must be one of {WARMUP_TYPES}, got {optim_cfg.WARMUP_TYPE!r}")
    if optim_cfg.LR_SCHEDULER == "multi_step" and not isinstance(optim_cfg.STEPSIZE, (list, tuple)):
        raise ConfigError("OPTIM.STEPSIZE must be a list of epochs for multi_step")

    if steps_every_iteration(optim_cfg):
        if optim_cfg.WARMUP_EPOCH > 0:
            raise ConfigError(f"OPTIM.WARMUP_EPOCH must be 0 with OPTIM.LR_SCHEDULER {optim_cfg.LR_SCHEDULER} "
                              "(its warm-up is OPTIM.LLAMP_COSINE.WARMUP_FRACTION of epoch 0)")
        if not batches_per_epoch:
            raise ValueError("llamp_cosine needs the number of batches per epoch")

        def multiplier(base_lr: float):
            return lambda it: llamp_lr_at_iteration(it, batches_per_epoch, base_lr, optim_cfg) / base_lr
    else:
        def multiplier(base_lr: float):
            return lambda epoch: lr_at_epoch(epoch, base_lr, optim_cfg) / base_lr

    lambdas = [multiplier(group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
