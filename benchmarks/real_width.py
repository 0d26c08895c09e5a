"""LLaMP, MaPLe and zero-shot CLIP side by side at real widths on CPU, and how LLaMP's cost grows with classes.

    python benchmarks/real_width.py [--quick] [--classes 12 24 48] [--steps 3] [--json FILE] [--baseline JSON]

Everything has real widths and random weights, fp32 on 2 threads, the same in every model:
  * CLIP ViT-B/16 shapes (text 512 x 12 layers, vision 768 x 12, patch 16, 224 px,
    projection 512), saved once as a Hugging Face folder and loaded by each model
    with ``load_clip``, as the trainers load it;
  * one LLaMA-2-7B-shaped decoder layer (hidden 4096, 32 heads, MLP 11008) and the
    final norm, saved as a one-layer safetensors checkpoint and read with
    ``load_decoder_tail``;
  * a knowledge cache of 48 texture classes x 11 templates x 96 tokens in fp32 (the
    build's default dtype): random keys, values and targets written by
    ``CacheWriter``, opened with ``KnowledgeCache.open`` (with every check the
    trainer makes) and read with ``KVStager``, one random template per step;
  * each method's reference config (LLaMP base2new.yaml, MaPLe vit_b16_base2new.yaml,
    ZeroshotCLIP vit_b16.yaml) with PREC fp32, its model, parameter groups and
    optimiser built by the trainer's own functions (``trainers.optim``: Dassl's
    optimisers, Adam-family fused; LLaMP: AdamW, two learning rates, gradient
    clipping 1.0; MaPLe: SGD), and each step made by the trainers' ``optimizer_step``;
  * one batch of 4 random images, for training and for evaluation.

Every (method, class count) runs in its own spawned process, so that its memory
is its own; a thread in it samples that memory (``benchmarks/rss.py``: resident
anonymous memory apart from reclaimable file-backed pages). The methods of one
class count are alive together and take turns, step by step, so that a change of
machine load hits them alike. Each runs two warm-up steps (the step after the
first was still 20-30 % slower in every run) and ``--steps`` timed training
steps (two at the other class counts), the forward (with the K/V
read and the losses), backward and optimiser step timed apart (medians); then
one evaluation's text features, and the evaluation of one batch (median of up to
3 after a warm-up). Checkpoint sizes are the bytes ``torch.save`` writes for the
trainable tensors in fp32 alone (the model) and with the optimiser state (what a
resume needs). At 24 classes LLaMP's step is also timed part by part.

Printed (and written to ``--json``): the side-by-side table at 24 classes with the
ratios LLaMP/MaPLe (training step) and LLaMP/zero-shot (evaluation of one batch);
then each measure at every class count, fitted as a + b x classes, extrapolated to
SUN397's (199) and ImageNet's (500) base halves; and the knowledge cache's bytes
per class on disk and on the device. With ``--baseline OLD.json`` (an earlier run's
JSON, e.g. of the code before a change), each target measure then and now and
whether it meets the performance issue's target. Absolute times depend on the CPU and its load
(the load average is printed with them): compare the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.process_runner import WARMUP_STEPS, measure_group  # noqa: E402
from benchmarks.real_width_assets import (BATCH, CACHE_LENGTH, CLASSNAMES, NUM_TEMPLATES, THREADS,  # noqa: E402
                                          cache_bytes, write_assets)
from benchmarks.real_width_baseline import compare_with_baseline, print_baseline  # noqa: E402
from benchmarks.real_width_benches import METHODS  # noqa: E402
from benchmarks.real_width_report import print_scaling, print_side_by_side, scaling_rows  # noqa: E402

MAIN_CLASSES = 24


def uptime_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="development run: 12 and 24 classes, 1 timed step")
    parser.add_argument("--classes", type=int, nargs="+", help="class counts (default 12 24 48)")
    parser.add_argument("--steps", type=int, help=f"timed training steps after {WARMUP_STEPS} warm-up steps at "
                        f"{MAIN_CLASSES} classes (default 5; at most 2 at the other class counts)")
    parser.add_argument("--no-parts", action="store_true", help="skip timing LLaMP's step part by part")
    parser.add_argument("--baseline", metavar="JSON", help="an earlier run's JSON (e.g. before a change, on the "
                        "same machine): prints each target measure then and now")
    parser.add_argument("--json", default=os.path.join(REPO, "output", "benchmarks", "real_width.json"),
                        help="where to write the results (default: output/benchmarks/real_width.json)")
    args = parser.parse_args(argv)
    classes = sorted(set(args.classes or ([12, 24] if args.quick else [12, 24, 48])))
    if not 1 <= min(classes) <= max(classes) <= len(CLASSNAMES):
        parser.error(f"--classes must lie in 1..{len(CLASSNAMES)}")
    steps = args.steps or (1 if args.quick else 5)
    steps_others = max(1, min(2, steps - 1))
    main_classes = MAIN_CLASSES if MAIN_CLASSES in classes else classes[len(classes) // 2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), uptime_line()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    # The main class count first, all three methods; then LLaMP and MaPLe at each other count.
    groups = [(main_classes, METHODS)] + [(n, METHODS[:2]) for n in classes if n != main_classes]
    runs = []
    with tempfile.TemporaryDirectory(prefix="llamp-real-width-") as work:
        log("writing the CLIP folder, the one-layer LLM checkpoint and the knowledge cache")
        paths = write_assets(work, CLASSNAMES[:max(classes)])
        cache = cache_bytes(paths["cache"], classes)
        for n, methods in groups:
            log(f"{', '.join(methods)} with {n} classes ({uptime_line()})")
            jobs = {m: {**paths, "method": m, "classnames": CLASSNAMES[:n]} for m in methods}
            runs += measure_group(jobs, steps if n == main_classes else steps_others,
                                  parts=n == main_classes and not args.no_parts, log=log)

    results = {(r["method"], r["classes"]): r for r in runs}
    llamp, maple, zs = (results.get((m, main_classes)) for m in METHODS)
    report = {
        "setup": {"threads": THREADS, "batch": BATCH, "templates": NUM_TEMPLATES, "cache_length": CACHE_LENGTH,
                  "dtype": "float32", "steps_main": steps, "steps_others": steps_others, "warmup_steps": WARMUP_STEPS,
                  "torch": torch.__version__},
        "main_classes": main_classes, "load_before": load_before, "load_after": uptime_line(),
        "wall_s": time.perf_counter() - started, "runs": runs, "cache": cache,
        "ratios": {
            "LLaMP / MaPLe, training step": llamp["step_s"]["total"] / maple["step_s"]["total"],
            "LLaMP / zero-shot, evaluation of one batch": llamp["eval_batch_s"] / zs["eval_batch_s"],
            "LLaMP / zero-shot, text features of one evaluation": llamp["text_features_s"] / zs["text_features_s"],
        },
        "scaling": scaling_rows(results),
    }
    if args.baseline:
        with open(args.baseline) as f:
            report["baseline"] = compare_with_baseline(report, json.load(f), args.baseline)
    print_side_by_side(report)
    if args.baseline:
        print_baseline(report["baseline"])
    print_scaling(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {os.path.abspath(args.json)}")
    return report


if __name__ == "__main__":
    main()
