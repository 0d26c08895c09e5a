"""Per-step training time of every trainer on its demo config, measured in one process.

    python benchmarks/step_time.py [--steps 20] [--batch-size 8]

Each trainer is built by train.py's own config code (demo config, tiny models,
Synthetic base classes, 16 shots) with the same batch size, then timed over
``--steps`` optimisation steps after 3 warm-up steps (median). Zero-shot CLIP
has no training step: its evaluation of one batch is the baseline the other
times are divided by. Absolute times depend on the CPU and its load; compare
the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.demo_assets import write_demo  # noqa: E402
from benchmarks.timing import median_seconds  # noqa: E402

TRAINERS = ["CoOp", "CoCoOp", "KgCoOp", "MaPLe", "PromptSRC", "LLaMP"]


def build_trainer(name: str, data: str, tiny: dict, out: str, batch_size: int):
    from dassl.engine import build_trainer as dassl_build_trainer
    from dassl.utils import set_random_seed

    import train

    opts = ["MODEL.BACKBONE.PATH", tiny["clip"], "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
            "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size), "DATALOADER.TEST.BATCH_SIZE", str(batch_size)]
    if name == "LLaMP":
        opts += ["TRAINER.LLAMP.LLM_PATH", tiny["llm"]]
    args = train.parse_args(["--root", data, "--seed", "1", "--trainer", name,
                             "--dataset-config-file", os.path.join(REPO, "configs/datasets/synthetic.yaml"),
                             "--config-file", os.path.join(REPO, f"configs/trainers/{name}/demo.yaml"),
                             "--output-dir", os.path.join(out, name), *opts])
    cfg = train.setup_cfg(args)
    set_random_seed(1)
    return dassl_build_trainer(cfg)


def time_steps(trainer, steps: int, warmup: int = 3) -> float:
    """Median seconds of one forward_backward (forward, loss, backward, optimiser step)."""
    trainer.set_model_mode("train")
    trainer.num_batches = 10 ** 6  # never the epoch's last batch: no LR step inside the timing
    batches = []
    while len(batches) < steps + warmup:
        batches.extend(trainer.train_loader_x)
    numbered = enumerate(batches)

    def one_step():
        trainer.batch_idx, batch = next(numbered)
        trainer.forward_backward(batch)

    return median_seconds(one_step, steps, warmup)


def time_zero_shot(trainer, steps: int, warmup: int = 3) -> float:
    images = next(iter(trainer.test_loader))["img"].to(trainer.device)
    return median_seconds(lambda: trainer.model_inference(images), steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    work = tempfile.mkdtemp(prefix="llamp-steps-")
    tiny, data = write_demo(work)
    results = {"torch_threads": torch.get_num_threads(), "batch_size": args.batch_size}
    zs = build_trainer("ZeroshotCLIP", data, tiny, work, args.batch_size)
    baseline = time_zero_shot(zs, args.steps)
    results["ZeroshotCLIP_eval_batch_ms"] = round(1000 * baseline, 1)
    for name in TRAINERS:
        seconds = time_steps(build_trainer(name, data, tiny, work, args.batch_size), args.steps)
        results[name] = {"step_ms": round(1000 * seconds, 1), "over_zeroshot_eval": round(seconds / baseline, 2)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
