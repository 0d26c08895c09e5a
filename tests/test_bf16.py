"""PREC bf16 on CPU, as users run it on CUDA: with and without DeepSpeed (its bf16 mode under a launcher).

Tolerances, measured on the tests' tiny models (random weights; the first step: 2 shots, seed 1, query
template 0): the total loss in bf16 was within 1.4 % of fp32's without DeepSpeed and 0.1 % with it; each
trained tensor's gradient had cosine >= 0.9956 with fp32's without DeepSpeed and >= 0.9922 with it (DeepSpeed's
module holds the trained tensors, the logit scale among them, in bf16), all of them together 0.998 and 0.996.
The bounds leave about 3x the measured distance for other CPUs' rounding. fp32 under DeepSpeed equals plain
fp32; where each tensor lives is checked dtype by dtype.
"""
import os
import subprocess
import sys

import pytest
import torch
from train_cli import LAUNCHER_VARS, REPO, accuracy, run_train, single_process_launcher_env, train_argv

LOSS_REL_TOL = 0.05
GRAD_COSINE_EACH = 0.98
GRAD_COSINE_ALL = 0.99


@pytest.fixture(scope="module")
def steps(tiny_models, synthetic_cache, tmp_path_factory):
    """The first step's losses, gradients and dtypes in fp32 and bf16, with and without DeepSpeed."""
    out = tmp_path_factory.mktemp("precision_steps")
    results = {}
    for prec in ("fp32", "bf16"):
        for deepspeed in (False, True):
            result = out / f"{prec}_{deepspeed}.pt"
            env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
            env.update(PYTHONPATH=REPO, HF_HUB_OFFLINE="1", **(single_process_launcher_env() if deepspeed else {}))
            proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "precision_step.py"),
                                   synthetic_cache["root"], tiny_models["clip"], tiny_models["llm"],
                                   str(out / f"run_{prec}_{deepspeed}"), prec, str(deepspeed), str(result)],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
            results[prec, deepspeed] = torch.load(result, weights_only=True)
    return results


def gradient_cosines(a: dict, b: dict) -> tuple[dict, float]:
    each = {name: torch.nn.functional.cosine_similarity(a[name].flatten(), b[name].flatten(), dim=0).item()
            for name in a if a[name].norm() > 0}
    flat = [torch.cat([g[name].flatten() for name in sorted(a)]) for g in (a, b)]
    return each, torch.nn.functional.cosine_similarity(*flat, dim=0).item()


def test_deepspeed_fp32_step_is_the_plain_step(steps):
    plain, deepspeed = steps["fp32", False], steps["fp32", True]
    assert deepspeed["losses"] == plain["losses"]
    for name, grad in plain["grads"].items():
        torch.testing.assert_close(deepspeed["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("deepspeed", [False, True], ids=["plain", "deepspeed"])
def test_bf16_step_is_the_fp32_step_within_bf16_rounding(steps, deepspeed):
    fp32, bf16 = steps["fp32", False], steps["bf16", deepspeed]
    total32, total16 = sum(fp32["losses"].values()), sum(bf16["losses"].values())
    assert total16 != total32  # bf16 really computed
    assert abs(total16 - total32) <= LOSS_REL_TOL * total32, (bf16["losses"], fp32["losses"])
    each, together = gradient_cosines(fp32["grads"], bf16["grads"])
    assert min(each.values()) >= GRAD_COSINE_EACH, min(each.items(), key=lambda kv: kv[1])
    assert together >= GRAD_COSINE_ALL


def test_each_tensor_is_where_the_precision_table_puts_it(steps):
    fp32 = {"trained": {"torch.float32"}, "frozen": {"torch.float32"}, "targets": "torch.float32",
            "kv": "torch.float32"}
    assert steps["fp32", False]["dtypes"] == fp32
    assert steps["fp32", True]["dtypes"] == {**fp32, "masters": {"torch.float32"}}
    # bf16: frozen weights and K/V rows in bf16, the trained tensors' fp32 copies updated by the optimiser
    # (DeepSpeed: its fp32 masters, the module holding bf16 copies); the distillation targets stay fp32
    bf16 = {"frozen": {"torch.bfloat16"}, "targets": "torch.float32", "kv": "torch.bfloat16"}
    assert steps["bf16", False]["dtypes"] == {**bf16, "trained": {"torch.float32"}}
    assert steps["bf16", True]["dtypes"] == {**bf16, "trained": {"torch.bfloat16"}, "masters": {"torch.float32"}}


def test_bf16_deepspeed_checkpoint_keeps_fp32_masters_and_evaluates_in_fp32_and_bf16(tiny_models, synthetic_cache,
                                                                                      tmp_path):
    root, trained = synthetic_cache["root"], tmp_path / "trained"
    proc = run_train(*train_argv("LLaMP", root, trained, tiny_models, "OPTIM.MAX_EPOCH", "1",
                                 "TRAINER.LLAMP.PREC", "bf16", "TRAINER.LLAMP.DEEPSPEED", "True"),
                     env=single_process_launcher_env())
    assert "bf16 True" in proc.stdout
    state = torch.load(trained / "llamp" / "model.pth.tar-1", weights_only=True)["state_dict"]
    assert {t.dtype for t in state.values()} == {torch.float32}
    # the masters themselves, not the module's bf16 copies: some values fall between bf16 numbers
    assert any((t != t.bfloat16().float()).any() for t in state.values())
    evaluated = {}
    for prec in ("fp32", "bf16"):
        out = run_train(*train_argv("LLaMP", root, tmp_path / f"eval_{prec}", tiny_models, "TRAINER.LLAMP.PREC", prec,
                                    flags=("--eval-only", "--model-dir", str(trained), "--load-epoch", "1")))
        evaluated[prec] = accuracy(out.stdout)
    # 120 test images: one image is 0.83 points; the trained run evaluated its bf16 copies
    assert abs(evaluated["fp32"] - evaluated["bf16"]) <= 2.5, evaluated
    assert abs(evaluated["bf16"] - accuracy(proc.stdout)) <= 2.5, (evaluated, accuracy(proc.stdout))
