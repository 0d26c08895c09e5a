"""LLaMP, MaPLe and zero-shot CLIP side by side at real widths on CPU, fp32 against bf16, and how LLaMP's cost
grows with classes.

    python benchmarks/real_width.py [--quick] [--classes 24 100 500] [--precisions fp32 bf16] [--steps 5]
                                    [--json FILE] [--baseline JSON]

Everything has real widths and random weights, on 2 threads, the same in every model:
  * CLIP ViT-B/16 shapes (text 512 x 12 layers, vision 768 x 12, patch 16, 224 px,
    projection 512), saved once as a Hugging Face folder and loaded by each model
    with ``load_clip``, as the trainers load it;
  * one LLaMA-2-7B-shaped decoder layer (hidden 4096, 32 heads, MLP 11008) and the
    final norm, saved as a one-layer safetensors checkpoint and read with
    ``load_decoder_tail``;
  * a knowledge cache of 96 tokens per class and template: random keys, values and
    targets written by ``CacheWriter``, opened with ``KnowledgeCache.open`` (with
    every check the trainer makes) and read with ``KVStager``, one random template
    per step. Up to 48 classes it holds all 11 templates; past 48 (where 11 templates
    would take 34.6 MB per class of disk in fp32) one template, which is all a step
    reads: the text features of one evaluation are then timed for that template and
    scaled to 11 in the tables (marked so). The fp32 runs read a cache stored in fp32
    (the build's default), the bf16 runs one stored in bf16 (``--dtype bfloat16``),
    from the same random draws; each is written when its first class count runs and
    deleted after its last;
  * class names: DTD's 47 texture names and one more, then two of them as one name
    (``class_names``: 2 to 6 CLIP tokens, like ImageNet's multi-word names);
  * each method's reference config (LLaMP base2new.yaml, MaPLe vit_b16_base2new.yaml,
    ZeroshotCLIP vit_b16.yaml) with PREC set to the job's precision, its model, parameter
    groups and optimiser built by the trainer's own functions (``trainers.optim``:
    Dassl's optimisers, Adam-family fused; LLaMP: AdamW, two learning rates, gradient
    clipping 1.0; MaPLe: SGD), and each step made by the trainers' ``optimizer_step``;
  * precision as ``trainers.precision.Precision`` places it on CPU: fp32, or bf16
    (frozen weights cast to bf16 once built, forward, losses, text features and the
    evaluation under bf16 autocast, trained tensors and optimiser state in fp32,
    LLaMP's K/V rows read in bf16);
  * one batch of 4 random images, for training and for evaluation.

Every (method, precision, class count) runs in its own spawned process, so that its
memory is its own; a thread in it samples that memory (``benchmarks/rss.py``:
resident anonymous memory apart from reclaimable file-backed pages;
``benchmarks/process_runner.py``). The jobs of one class count are alive together
(as many as the memory allows: ``--memory-gib``) and take turns, step by step, so
that a change of machine load hits them alike. Each runs two warm-up steps (the
step after the first was still 20-30 % slower in every run) and ``--steps`` timed
training steps (two at the other class counts; one warm-up and one timed step from
200 classes on), the forward (with the K/V read and the losses), backward and
optimiser step timed apart (medians); then one evaluation's text features, and the
evaluation of one batch (median of up to 3 after a warm-up). Checkpoint sizes are
the bytes ``torch.save`` writes for the trainable tensors in fp32 alone (the model)
and with the optimiser state (what a resume needs). At 24 classes LLaMP's step is
also timed part by part, in each precision.

Printed (and written to ``--json``): the side-by-side table at 24 classes in fp32
with the ratios LLaMP/MaPLe (training step) and LLaMP/zero-shot (evaluation of one
batch); fp32 against bf16 per method and class count (step, text features, peak
memory) and LLaMP's step part by part in both; each fp32 measure at every class
count, fitted as a + b x classes and extrapolated to SUN397's (199) and ImageNet's
(500) base halves; the knowledge cache's bytes per class on disk and on the device;
and the measured bytes a GPU's peak memory is derived from (weights, AdamW state,
K/V rows, text features, memory growth per class), with that derivation. With
``--baseline OLD.json`` (an earlier run's JSON, e.g. of the code before a change),
each target measure then and now and whether it meets the performance issue's
target. Absolute times depend on the CPU and its load (the load average is printed
with them): compare the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.process_runner import WARMUP_STEPS, measure_group  # noqa: E402
from benchmarks.real_width_assets import (BATCH, CACHE_LENGTH, CLASSNAMES, NUM_TEMPLATES, THREADS,  # noqa: E402
                                          cache_bytes, class_names, write_cache, write_models)
from benchmarks.real_width_baseline import compare_with_baseline, print_baseline  # noqa: E402
from benchmarks.real_width_benches import METHODS  # noqa: E402
from benchmarks.real_width_gpu_memory import gpu_memory_inputs, print_gpu_memory  # noqa: E402
from benchmarks.real_width_report import (GIB, precision_rows, print_precision, print_scaling,  # noqa: E402
                                          print_side_by_side, scaling_rows, summarise_caches)

MAIN_CLASSES = 24
PRECISIONS = ("fp32", "bf16")
FULL_TEMPLATES_UP_TO = len(CLASSNAMES)  # past this class count the cache holds one template
LARGE_CLASSES = 200  # from this class count on: one warm-up and one timed step
CACHE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the cache a run of that precision reads


def uptime_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def memory_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return 8.0


def estimated_gib(method: str, classes: int) -> float:
    """A generous guess at a job's peak resident memory (fp32 figures of earlier runs), for grouping jobs."""
    fixed, per_class = {"LLaMP": (2.6, 0.025), "MaPLe": (1.9, 0.03), "ZeroshotCLIP": (1.0, 0.002)}[method]
    return fixed + per_class * classes


def job_groups(jobs: list[dict], budget_gib: float) -> list[list[dict]]:
    """Consecutive jobs of one class count packed into groups whose estimated memory fits ``budget_gib``
    (a job alone when it does not fit at all)."""
    groups: list[list[dict]] = []
    used = 0.0
    for job in jobs:
        need = estimated_gib(job["method"], len(job["classnames"]))
        same_count = groups and len(groups[-1][0]["classnames"]) == len(job["classnames"])
        if same_count and used + need <= budget_gib:
            groups[-1].append(job)
            used += need
        else:
            groups.append([job])
            used = need
    return groups


def cache_key(job: dict) -> tuple[int, str] | None:
    """The cache a job reads: (templates, precision whose dtype it is stored in); None for the others."""
    if job["method"] != "LLaMP":
        return None
    classes = len(job["classnames"])
    return (NUM_TEMPLATES if classes <= FULL_TEMPLATES_UP_TO else 1, job["prec"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="development run: 12 and 24 classes, 1 timed step")
    parser.add_argument("--classes", type=int, nargs="+", help="class counts (default 24 100 500)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="PREC of LLaMP and MaPLe (default: fp32 bf16); zero-shot runs in the first")
    parser.add_argument("--steps", type=int, help=f"timed training steps after {WARMUP_STEPS} warm-up steps at "
                        f"{MAIN_CLASSES} classes (default 5; at most 2 at the other class counts, and one after one "
                        f"warm-up from {LARGE_CLASSES} classes on)")
    parser.add_argument("--no-parts", action="store_true", help="skip timing LLaMP's step part by part")
    parser.add_argument("--memory-gib", type=float, help="memory the jobs alive together may take, by a generous "
                        "estimate (default: 70 %% of MemAvailable at the start)")
    parser.add_argument("--baseline", metavar="JSON", help="an earlier run's JSON (e.g. before a change, on the "
                        "same machine): prints each target measure then and now")
    parser.add_argument("--json", default=os.path.join(REPO, "output", "benchmarks", "real_width.json"),
                        help="where to write the results (default: output/benchmarks/real_width.json)")
    args = parser.parse_args(argv)
    classes = sorted(set(args.classes or ([12, 24] if args.quick else [24, 100, 500])))
    try:
        class_names(max(classes))
    except ValueError as err:
        parser.error(f"--classes: {err}")
    if min(classes) < 1:
        parser.error("--classes must be positive")
    precisions = [p for p in PRECISIONS if p in args.precisions]
    side_prec = precisions[0]  # the side-by-side table's (fp32 unless only bf16 is asked)
    steps = args.steps or (1 if args.quick else 5)
    steps_others = max(1, min(2, steps - 1))
    main_classes = MAIN_CLASSES if MAIN_CLASSES in classes else classes[len(classes) // 2]
    budget = args.memory_gib or 0.7 * memory_available_gib()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), uptime_line()
    from llamp.clip.loading import load_clip

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    # The main class count first (zero-shot beside the others, in the side-by-side precision); then each other
    # count. Within a count: each precision's LLaMP and MaPLe.
    jobs = []
    for n in [main_classes] + [c for c in classes if c != main_classes]:
        for prec in precisions:
            methods = METHODS if n == main_classes and prec == side_prec else METHODS[:2]
            jobs += [{"method": m, "prec": prec, "classnames": class_names(n)} for m in methods]
    groups = job_groups(jobs, budget)
    last_use = {}
    for i, group in enumerate(groups):
        for job in group:
            if cache_key(job):
                last_use[cache_key(job)] = i
    runs, failures, caches = [], [], []
    with tempfile.TemporaryDirectory(prefix="llamp-real-width-") as work:
        log("writing the CLIP folder and the one-layer LLM checkpoint")
        paths = write_models(work)
        written: dict[tuple[int, str], str] = {}
        for i, group in enumerate(groups):
            n = len(group[0]["classnames"])
            for key in sorted({cache_key(job) for job in group if cache_key(job)}):
                if key not in written:
                    templates, prec = key
                    users = [len(j["classnames"]) for g in groups for j in g if cache_key(j) == key]
                    folder = os.path.join(work, f"cache-{templates}t-{prec}")
                    log(f"writing the knowledge cache: {max(users)} classes x {templates} templates in "
                        f"{prec} ({disk_line(work)})")
                    write_cache(folder, class_names(max(users)), paths["llm"], load_clip("ViT-B/16", paths["clip"]),
                                num_templates=templates, dtype=CACHE_DTYPES[prec])
                    caches.append({**cache_bytes(folder, sorted(set(users))), "classes": max(users)})
                    written[key] = folder
            for job in group:
                job.update(paths)
                if cache_key(job):
                    job["cache"] = written[cache_key(job)]
            large = n >= LARGE_CLASSES
            group_steps = 1 if large else steps if n == main_classes else steps_others
            log(f"{', '.join(j['method'] + ' ' + j['prec'] for j in group)} with {n} classes "
                f"({uptime_line()}; {disk_line(work)})")
            try:
                runs += measure_group(group, group_steps, parts=n == main_classes and not args.no_parts, log=log,
                                      warmup=1 if large else WARMUP_STEPS)
            except RuntimeError as err:  # one group's failure (e.g. out of memory) leaves the others' results
                log(f"FAILED: {err}")
                failures.append({"classes": n, "jobs": [f"{j['method']} {j['prec']}" for j in group],
                                 "error": str(err)})
            for key, folder in list(written.items()):
                if last_use[key] == i:
                    shutil.rmtree(folder)
                    del written[key]

    side = {(r["method"], r["classes"]): r for r in runs if r["prec"] == side_prec}
    llamp, maple, zs = (side.get((m, main_classes)) for m in METHODS)
    report = {
        "setup": {"threads": THREADS, "batch": BATCH, "templates": NUM_TEMPLATES, "cache_length": CACHE_LENGTH,
                  "precisions": precisions, "side_by_side_prec": side_prec,
                  "full_templates_up_to": FULL_TEMPLATES_UP_TO, "large_classes": LARGE_CLASSES,
                  "steps_main": steps, "steps_others": steps_others, "warmup_steps": WARMUP_STEPS,
                  "memory_budget_gib": budget, "torch": torch.__version__, "cpu_bf16": cpu_bf16_flags()},
        "main_classes": main_classes, "load_before": load_before, "load_after": uptime_line(),
        "wall_s": time.perf_counter() - started, "runs": runs, "failures": failures,
        "cache": summarise_caches(caches),
        "ratios": ratios(llamp, maple, zs),
        "scaling": scaling_rows(side),
        "scaling_by_prec": {prec: scaling_rows({(r["method"], r["classes"]): r for r in runs if r["prec"] == prec})
                            for prec in precisions},
        "precision": precision_rows(runs),
        "gpu_memory": gpu_memory_inputs(runs),
    }
    if args.baseline:
        with open(args.baseline) as f:
            report["baseline"] = compare_with_baseline(report, json.load(f), args.baseline)
    print_side_by_side(report)
    if args.baseline:
        print_baseline(report["baseline"])
    print_precision(report)
    print_scaling(report)
    print_gpu_memory(report)
    for failure in failures:
        print(f"\nFAILED at {failure['classes']} classes ({', '.join(failure['jobs'])}): "
              f"{failure['error'].splitlines()[0]}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {os.path.abspath(args.json)}")
    return report


def ratios(llamp: dict | None, maple: dict | None, zs: dict | None) -> dict:
    out = {}
    if llamp and maple:
        out["LLaMP / MaPLe, training step"] = llamp["step_s"]["total"] / maple["step_s"]["total"]
    if llamp and zs:
        out["LLaMP / zero-shot, evaluation of one batch"] = llamp["eval_batch_s"] / zs["eval_batch_s"]
        out["LLaMP / zero-shot, text features of one evaluation"] = llamp["text_features_s"] / zs["text_features_s"]
    return out


def disk_line(folder: str) -> str:
    usage = shutil.disk_usage(folder)
    used = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
    return f"{used / 1e9:.1f} GB in the work folder, {usage.free / 1e9:.0f} GB free"


def cpu_bf16_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")})


if __name__ == "__main__":
    main()
