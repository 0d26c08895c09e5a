"""The real-width benchmark's results as tables: the side-by-side at the main class count, the fits of each
measure against the class count, extrapolated to larger datasets, and the knowledge cache's size per class."""
from __future__ import annotations

import statistics

import torch

from benchmarks.real_width_assets import BATCH, CACHE_LENGTH, NUM_TEMPLATES, THREADS
from benchmarks.real_width_benches import METHODS

EXTRAPOLATE = {"SUN397 base": 199, "ImageNet base": 500}
PART_NAMES = {"llm_decoder": "LLM prompt decoder", "text_tower": "CLIP text tower (prompted)",
              "vision_tower_prompts_lora": "vision tower, prompts and LoRA", "teacher_vision_tower":
              "teacher vision tower (forward only)", "optimiser": "gradient clipping and AdamW"}
GIB, MB = 1024 ** 3, 1e6


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(intercept, per_class)`` of ``value = intercept + per_class * classes``."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def peak_memory(r: dict, phases: tuple[str, ...]) -> dict[str, int]:
    """Peaks over ``phases`` (sampled anon and file pages; the kernel's VmHWM at the end of the last)."""
    seen = [r["memory"][p] for p in phases if p in r["memory"]]
    return {"anon": max(p["anon"] for p in seen), "file": max(p["file"] for p in seen),
            "vm_hwm": seen[-1]["vm_hwm"]}


def training_memory(r: dict) -> dict[str, int]:
    """Peaks while building and training."""
    return peak_memory(r, ("build", "train"))


def whole_run_memory(r: dict) -> dict[str, int]:
    return peak_memory(r, ("build", "train", "eval"))


def scaling_rows(results: dict) -> dict[str, dict]:
    """Per measure: its value at each class count, the fitted line and extrapolations."""
    measures = {
        "LLaMP training step (s)": ("LLaMP", lambda r: r["step_s"]["total"]),
        "MaPLe training step (s)": ("MaPLe", lambda r: r["step_s"]["total"]),
        "LLaMP text features, one evaluation (s)": ("LLaMP", lambda r: r["text_features_s"]),
        "LLaMP evaluation of one batch (s)": ("LLaMP", lambda r: r["eval_batch_s"]),
        "MaPLe evaluation of one batch (s)": ("MaPLe", lambda r: r["eval_batch_s"]),
        "LLaMP peak resident anon, training (GiB)": ("LLaMP", lambda r: training_memory(r)["anon"] / GIB),
        "LLaMP peak file-backed, with evaluation (GiB)": ("LLaMP", lambda r: whole_run_memory(r)["file"] / GIB),
    }
    rows = {}
    for name, (method, value) in measures.items():
        points = sorted((n, value(r)) for (m, n), r in results.items() if m == method)
        if len(points) < 2:
            continue
        intercept, per_class = fit_line(points)
        rows[name] = {"at": {str(n): v for n, v in points}, "intercept": intercept, "per_class": per_class,
                      "extrapolated": {label: intercept + per_class * n for label, n in EXTRAPOLATE.items()}}
    return rows


def _cell(r, fn, fmt="{:.2f}") -> str:
    if r is None:
        return "-"
    try:
        return fmt.format(fn(r))
    except (KeyError, TypeError):
        return "-"


SIDE_BY_SIDE_ROWS = [
    ("training step, median (s)", lambda r: r["step_s"]["total"]),
    ("  forward, with losses (s)", lambda r: r["step_s"]["forward"]),
    ("    of which K/V read (s)", lambda r: r["step_s"]["kv_read"]),
    ("  backward (s)", lambda r: r["step_s"]["backward"]),
    ("  optimiser step (s)", lambda r: r["step_s"]["optimiser"]),
    ("text features, one evaluation (s)", lambda r: r["text_features_s"]),
    ("  of which LLM prompt decoder (s)", lambda r: r["text_features_parts_s"]["llm_decoder"]),
    (f"evaluation of one batch of {BATCH} (s)", lambda r: r["eval_batch_s"]),
    ("text tower positions per class", lambda r: r["text_positions"]),
    ("trainable parameters (M)", lambda r: r["trainable_params"] / 1e6),
    ("peak resident anonymous, building (GiB)", lambda r: r["memory"]["build"]["anon"] / GIB),
    ("peak RSS while training (GiB)", lambda r: training_memory(r)["vm_hwm"] / GIB),
    ("  resident anonymous (in use)", lambda r: training_memory(r)["anon"] / GIB),
    ("  file-backed (reclaimable)", lambda r: training_memory(r)["file"] / GIB),
    ("peak RSS with evaluation (GiB)", lambda r: whole_run_memory(r)["vm_hwm"] / GIB),
    ("  resident anonymous (in use)", lambda r: whole_run_memory(r)["anon"] / GIB),
    ("  file-backed (reclaimable)", lambda r: whole_run_memory(r)["file"] / GIB),
    ("checkpoint, model (MB)", lambda r: r["checkpoint_bytes"]["model"] / MB),
    ("checkpoint, resume state (MB)", lambda r: r["checkpoint_bytes"]["resume"] / MB),
]


def print_side_by_side(report: dict) -> None:
    """The three methods at the main class count, the ratios, and LLaMP's step part by part."""
    results = {(r["method"], r["classes"]): r for r in report["runs"]}
    n = report["main_classes"]
    llamp, maple, zs = (results.get((m, n)) for m in METHODS)
    print(f"\nReal widths on CPU, fp32, {THREADS} threads: CLIP ViT-B/16, one LLaMA-2-7B-shaped decoder layer, "
          f"{NUM_TEMPLATES} templates x {CACHE_LENGTH} cached tokens, batch {BATCH}, random weights")
    print(f"torch {torch.__version__}; {report['load_before']} at start, {report['load_after']} at the end; "
          f"{report['wall_s']:.0f} s in all\n")
    print(f"{n} classes{'':27s}{'LLaMP':>10s}{'MaPLe':>10s}{'zero-shot':>11s}")
    for label, fn in SIDE_BY_SIDE_ROWS:
        fmt = "{:.0f}" if "positions" in label else "{:.3f}" if "K/V" in label else "{:.2f}"
        print(f"{label:37s}{_cell(llamp, fn, fmt):>10s}{_cell(maple, fn, fmt):>10s}{_cell(zs, fn, fmt):>11s}")
    print(f"(text features: LLaMP all {NUM_TEMPLATES} templates once per evaluation; MaPLe one pass, which its "
          "forward repeats for every batch; zero-shot once per run)")
    for label, value in report["ratios"].items():
        print(f"{label:58s}{value:6.2f}x")
    if llamp and "parts_s" in llamp:
        parts = {**llamp["parts_s"], "optimiser": llamp["step_s"]["optimiser"]}
        total = sum(parts.values())
        print(f"LLaMP's step part by part ({n} classes; each part's forward + backward timed alone):")
        for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {PART_NAMES[name]:35s}{seconds:7.2f} s {100 * seconds / total:4.0f}%")


def print_scaling(report: dict) -> None:
    """Each measure at every class count with its fitted line, then the knowledge cache's bytes per class."""
    results = {(r["method"], r["classes"]): r for r in report["runs"]}
    rows = report["scaling"]
    if rows:
        counts = sorted({int(c) for row in rows.values() for c in row["at"]})
        print(f"\nScaling with classes{'':27s}" + "".join(f"{c:>8d}" for c in counts)
              + f"{'per class':>11s}{'fixed':>8s}" + "".join(f"{n:>8d}" for n in EXTRAPOLATE.values()))
        for name, row in rows.items():
            values = "".join(f"{row['at'][str(c)]:8.2f}" if str(c) in row["at"] else f"{'-':>8s}" for c in counts)
            extra = "".join(f"{v:8.2f}" for v in row["extrapolated"].values())
            print(f"{name:47s}{values}{row['per_class']:11.4f}{row['intercept']:8.2f}{extra}")
        print(f"(columns {', '.join(str(n) for n in EXTRAPOLATE.values())}: the fitted line extrapolated to "
              f"{' and '.join(EXTRAPOLATE)}; text tower positions LLaMP "
              + ", ".join(f"{results[('LLaMP', c)]['text_positions']}" for c in counts if ("LLaMP", c) in results)
              + ", MaPLe 77)")
        steps = [rows.get(f"{m} training step (s)") for m in ("LLaMP", "MaPLe")]
        if all(steps):
            print("LLaMP / MaPLe, training step on the fitted lines: " + ", ".join(
                f"{label} {steps[0]['extrapolated'][label] / steps[1]['extrapolated'][label]:.2f}x"
                for label in EXTRAPOLATE) + f"; per class alone {steps[0]['per_class'] / steps[1]['per_class']:.2f}x")
    cache = report["cache"]
    device = cache["device_bytes_per_class"]
    print(f"\nKnowledge cache per class: {cache['disk_bytes_per_class'] / MB:.1f} MB on disk ({NUM_TEMPLATES} "
          f"templates, fp32); on the device for one step or one template of an evaluation "
          f"{device['float32'] / MB:.2f} MB in fp32 (CPU), {device['bfloat16'] / MB:.2f} MB in bf16 "
          "(PREC bf16 on CUDA)")
    for label, classes in EXTRAPOLATE.items():
        print(f"  {label} ({classes} classes): {classes * cache['disk_bytes_per_class'] / 1e9:.1f} GB on disk, "
              f"{classes * device['bfloat16'] / 1e9:.2f} GB of K/V per step on the GPU in bf16")
    print("GPU rows (bf16 DeepSpeed step time and peak GPU memory at 24 and 500 classes): not yet measured")
