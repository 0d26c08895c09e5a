"""Optimisers and learning-rate schedules from Dassl's OPTIM keys, and their checkpoint-safe state."""
import io
import math

import pytest
import torch
from dassl.config import get_cfg_default
from dassl.optim import build_optimizer as dassl_build_optimizer

from llamp.errors import ConfigError
from trainers.config import extend_cfg
from trainers.optim import build_lr_scheduler, build_optimizer


def optim_cfg(**overrides):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    for key, value in overrides.items():
        setattr(cfg.OPTIM, key, value)
    return cfg.OPTIM


def lrs_per_epoch(cfg, base_lrs=(2e-4, 2e-5)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)])
    scheduler = build_lr_scheduler(optimizer, cfg)
    history = []
    for _ in range(cfg.MAX_EPOCH):
        history.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return history, scheduler


def test_cosine_with_constant_warmup_and_floor():
    cfg = optim_cfg(LR_SCHEDULER="cosine", MAX_EPOCH=5, WARMUP_EPOCH=1, WARMUP_TYPE="constant",
                    WARMUP_CONS_LR=1e-6, MIN_LR=1e-5)
    history, _ = lrs_per_epoch(cfg)
    assert history[0] == pytest.approx([1e-6, 1e-6])  # constant warm-up is absolute for every group
    assert history[1] == pytest.approx([2e-4, 2e-5])  # the cosine starts after the warm-up (recount)
    expected = 1e-5 + (2e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 2 / 5))
    assert history[3][0] == pytest.approx(expected)
    assert all(a[0] >= b[0] for a, b in zip(history[1:], history[2:]))  # decreasing
    assert min(h[1] for h in history[1:]) >= 1e-5  # floored, never below


def test_linear_warmup_and_steps():
    cfg = optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(2,), GAMMA=0.1, MAX_EPOCH=6,
                    WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-7)
    history, _ = lrs_per_epoch(cfg, base_lrs=(1.0,))
    assert [h[0] for h in history] == pytest.approx([1e-7, 0.5, 1.0, 1.0, 0.1, 0.1])


def test_scheduler_state_loads_without_unpickling():
    cfg = optim_cfg(LR_SCHEDULER="cosine", MAX_EPOCH=4, WARMUP_EPOCH=1, WARMUP_TYPE="linear")
    _, scheduler = lrs_per_epoch(cfg)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["last_epoch"] == 4


def test_unknown_scheduler_names_the_key():
    with pytest.raises(ConfigError, match="OPTIM.LR_SCHEDULER"):
        lrs_per_epoch(optim_cfg(LR_SCHEDULER="exponential"))


def llamp_cosine_lrs(cfg, batches, base_lrs=(2e-4, 2e-5)):
    """Per-iteration learning rates of the llamp_cosine schedule: [epoch][iteration] -> per group."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)])
    scheduler = build_lr_scheduler(optimizer, cfg, batches_per_epoch=batches)
    history = []
    for _ in range(cfg.MAX_EPOCH):
        epoch = []
        for _ in range(batches):
            epoch.append([g["lr"] for g in optimizer.param_groups])
            optimizer.step()
            scheduler.step()
        history.append(epoch)
    return history


def test_llamp_cosine_period_is_at_least_min_period():
    """ImageNet's 10 epochs under MIN_PERIOD 20 end half-way down the cosine; MIN_PERIOD 0 runs it to the end."""
    half_way = llamp_cosine_lrs(optim_cfg(LR_SCHEDULER="llamp_cosine", LR=2e-4, MAX_EPOCH=10, WARMUP_EPOCH=0, MIN_LR=1e-5),
                                batches=5)
    assert half_way[9][0][0] == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi * 9 / 20)))
    cfg = optim_cfg(LR_SCHEDULER="llamp_cosine", LR=2e-4, MAX_EPOCH=10, WARMUP_EPOCH=0, MIN_LR=1e-5)
    cfg.LLAMP_COSINE.MIN_PERIOD = 0
    full = llamp_cosine_lrs(cfg, batches=5)
    assert full[9][0][0] == pytest.approx(max(1e-5, 2e-4 * 0.5 * (1 + math.cos(math.pi * 9 / 10))))
    assert full[0][0] == [2e-4, 2e-5]  # 5 batches: floor(5 / 10) = 0 iterations at the floor
    twelve = llamp_cosine_lrs(cfg, batches=12)
    assert twelve[0][0] == [1e-5, 5e-6] and twelve[0][1] == [2e-4, 2e-5]  # floor(12 / 10) = 1


def test_llamp_cosine_refuses_a_dassl_warmup():
    with pytest.raises(ConfigError, match="OPTIM.WARMUP_EPOCH"):
        llamp_cosine_lrs(optim_cfg(LR_SCHEDULER="llamp_cosine", MAX_EPOCH=2, WARMUP_EPOCH=1), batches=4)


@pytest.mark.parametrize("name", ["adamw", "adam", "amsgrad"])
def test_adam_family_optimisers_are_dassls_with_fused_kernels_and_step_alike(name):
    cfg = optim_cfg(NAME=name, LR=2e-3, WEIGHT_DECAY=5e-2, ADAM_BETA1=0.8, ADAM_BETA2=0.95)

    def model_and_groups():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 3))
        return model, [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 1e-4}]

    def train(build):
        model, groups = model_and_groups()
        optimizer = build(model, cfg, param_groups=groups)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            optimizer.zero_grad()
            model(torch.randn(4, 8, generator=gen)).square().mean().backward()
            optimizer.step()
        return model, optimizer

    dassl_model, dassl_optimizer = train(dassl_build_optimizer)
    model, optimizer = train(build_optimizer)
    assert type(optimizer) is type(dassl_optimizer)
    assert all(g["fused"] for g in optimizer.param_groups) and not dassl_optimizer.param_groups[0]["fused"]
    settings = ("lr", "betas", "weight_decay", "eps", "amsgrad")
    assert ([{k: g[k] for k in settings} for g in optimizer.param_groups]
            == [{k: g[k] for k in settings} for g in dassl_optimizer.param_groups])
    assert optimizer.param_groups[1]["lr"] == 1e-4 and optimizer.param_groups[0]["amsgrad"] == (name == "amsgrad")
    initial = model_and_groups()[0]
    for p, q, p0 in zip(model.parameters(), dassl_model.parameters(), initial.parameters()):
        assert torch.allclose(p, q, atol=1e-6) and not torch.equal(p, p0)  # the same steps, and they moved
    # the state dict has the same entries: a checkpoint of either resumes the other
    assert optimizer.state_dict()["state"].keys() == dassl_optimizer.state_dict()["state"].keys()


def test_other_optimisers_are_dassls_own():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, optim_cfg(NAME="sgd", LR=0.1))
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["lr"] == 0.1
