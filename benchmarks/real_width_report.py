"""The real-width benchmark's results as tables: the side-by-side at the main class count, fp32 against bf16,
the fits of each measure against the class count, extrapolated to larger datasets, the knowledge cache's size
per class, and the measured bytes a GPU's peak memory is derived from."""
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


def prec_of(r: dict) -> str:
    return r.get("prec", "fp32")  # runs of earlier versions were all fp32


def text_features_all(r: dict) -> float:
    """Seconds of one evaluation's text features: LLaMP over all NUM_TEMPLATES templates (runs whose cache
    held fewer: the time per template times NUM_TEMPLATES), the others as measured."""
    templates = r.get("templates")
    return r["text_features_s"] * NUM_TEMPLATES / templates if templates else r["text_features_s"]


def text_features_scaled(r: dict) -> bool:
    """Whether ``text_features_all`` is scaled from fewer templates than NUM_TEMPLATES."""
    return bool(r.get("templates")) and r["templates"] != NUM_TEMPLATES


def text_features_per_template(r: dict) -> float:
    """LLaMP: seconds per template (the text features of one template); the others: their text features."""
    return r["text_features_s"] / (r.get("templates") or 1)


def run_peak_anon(r: dict) -> int:
    """Peak resident anonymous memory while training and evaluating (the build apart: it holds the weights in
    fp32 before the cast to bf16, as the trainer's build does)."""
    return max(r["memory"][p]["anon"] for p in ("train", "eval") if p in r["memory"])


def run_peak_rss(r: dict) -> int:
    """Peak sampled RSS (anonymous + file-backed) while training and evaluating: in fp32 CLIP's weights stay in
    the memory-mapped safetensors file (file-backed pages), in bf16 their cast copies are anonymous memory, so
    only this sum compares the two precisions' resident weights."""
    return max(r["memory"][p]["rss"] for p in ("train", "eval") if p in r["memory"])


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
        "LLaMP text features, one evaluation (s)": ("LLaMP", text_features_all),
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
        if value is text_features_all:
            rows[name]["scaled_at"] = sorted(str(n) for (m, n), r in results.items()
                                             if m == method and text_features_scaled(r))
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
    prec = report["setup"].get("side_by_side_prec", "fp32")
    results = {(r["method"], r["classes"]): r for r in report["runs"] if prec_of(r) == prec}
    n = report["main_classes"]
    llamp, maple, zs = (results.get((m, n)) for m in METHODS)
    print(f"\nReal widths on CPU, {prec}, {THREADS} threads: CLIP ViT-B/16, one LLaMA-2-7B-shaped decoder layer, "
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
    """Each measure at every class count with its fitted line (per precision), then the knowledge cache's bytes
    per class."""
    by_prec = report.get("scaling_by_prec") or {report["setup"].get("side_by_side_prec", "fp32"): report["scaling"]}
    for prec, rows in by_prec.items():
        _print_scaling_rows(report, prec, rows)
    _print_cache(report)


def _print_scaling_rows(report: dict, prec: str, rows: dict) -> None:
    results = {(r["method"], r["classes"]): r for r in report["runs"] if prec_of(r) == prec}
    if rows:
        counts = sorted({int(c) for row in rows.values() for c in row["at"]})
        print(f"\nScaling with classes ({prec}){'':20s}" + "".join(f"{c:>8d}" for c in counts)
              + f"{'per class':>11s}{'fixed':>8s}" + "".join(f"{n:>8d}" for n in EXTRAPOLATE.values()))
        for name, row in rows.items():
            scaled = set(row.get("scaled_at", []))
            values = "".join((f"{row['at'][str(c)]:7.2f}" + ("*" if str(c) in scaled else " "))
                             if str(c) in row["at"] else f"{'-':>7s} " for c in counts)
            extra = "".join(f"{v:8.2f}" for v in row["extrapolated"].values())
            print(f"{name:47s}{values}{row['per_class']:11.4f}{row['intercept']:8.2f}{extra}")
        print(f"(columns {', '.join(str(n) for n in EXTRAPOLATE.values())}: the fitted line extrapolated to "
              f"{' and '.join(EXTRAPOLATE)}; text tower positions LLaMP "
              + ", ".join(f"{results[('LLaMP', c)]['text_positions']}" for c in counts if ("LLaMP", c) in results)
              + ", MaPLe 77)")
        if any(row.get("scaled_at") for row in rows.values()):
            print(f"* scaled: the cache held one template; its text features' time x {NUM_TEMPLATES} templates")
        steps = [rows.get(f"{m} training step (s)") for m in ("LLaMP", "MaPLe")]
        if all(steps):
            print("LLaMP / MaPLe, training step on the fitted lines: " + ", ".join(
                f"{label} {steps[0]['extrapolated'][label] / steps[1]['extrapolated'][label]:.2f}x"
                for label in EXTRAPOLATE) + f"; per class alone {steps[0]['per_class'] / steps[1]['per_class']:.2f}x")


def _print_cache(report: dict) -> None:
    cache = report["cache"]
    if not cache.get("device_bytes_per_class"):
        return
    device = cache["device_bytes_per_class"]
    disk = cache["disk_bytes_per_class"]
    print(f"\nKnowledge cache per class, {NUM_TEMPLATES} templates on disk: "
          + ", ".join(f"{disk[d] / MB:.1f} MB in {d}" for d in disk)
          + f"; on the device for one step or one template of an evaluation {device['float32'] / MB:.2f} MB in "
          f"fp32, {device['bfloat16'] / MB:.2f} MB in bf16 (PREC bf16)")
    per_disk = disk.get("bfloat16", disk.get("float32"))
    for label, classes in EXTRAPOLATE.items():
        print(f"  {label} ({classes} classes): {classes * per_disk / 1e9:.1f} GB on disk in "
              f"{'bfloat16' if 'bfloat16' in disk else 'float32'}, "
              f"{classes * device['bfloat16'] / 1e9:.2f} GB of K/V per step on the GPU in bf16")


def summarise_caches(caches: list[dict]) -> dict:
    """The caches written (each ``cache_bytes``'s dict and its class count), and per class: disk bytes for
    NUM_TEMPLATES templates per stored dtype (from the bytes per template), device bytes for one template."""
    disk: dict[str, float] = {}
    device: dict[str, float] = {}
    for c in caches:
        disk[c["dtype"]] = max(disk.get(c["dtype"], 0.0), c["disk_bytes_per_class_template"] * NUM_TEMPLATES)
        for dtype, b in c["device_bytes_per_class"].items():
            device[dtype] = max(device.get(dtype, 0.0), b)
    return {"disk_bytes_per_class": disk, "device_bytes_per_class": device, "files": caches}


# ---------------------------------------------------------------- fp32 against bf16

PRECISION_MEASURES = {  # name: (value, whether the value is scaled from fewer templates)
    "training step (s)": (lambda r: r["step_s"]["total"], None),
    "text features, 1 template (s)": (lambda r: text_features_per_template(r) if r.get("templates") else None,
                                      None),
    "text features, evaluation (s)": (text_features_all, text_features_scaled),
    "peak anonymous (GiB)": (lambda r: run_peak_anon(r) / GIB, None),
    "peak RSS (GiB)": (lambda r: run_peak_rss(r) / GIB, None),
}
PRECISION_EXTRA = {  # in the JSON only
    "forward (s)": lambda r: r["step_s"]["forward"],
    "backward (s)": lambda r: r["step_s"]["backward"],
    "optimiser step (s)": lambda r: r["step_s"]["optimiser"],
    "evaluation of one batch (s)": lambda r: r["eval_batch_s"],
    "text features, LLM prompt decoder (s)": lambda r: r["text_features_parts_s"]["llm_decoder"],
    "peak resident anonymous, training (GiB)": lambda r: r["memory"]["train"]["anon"] / GIB,
    "peak resident anonymous, evaluation (GiB)": lambda r: r["memory"]["eval"]["anon"] / GIB,
    "peak resident anonymous, building (GiB)": lambda r: r["memory"]["build"]["anon"] / GIB,
}


def _value(fn, r):
    try:
        return fn(r)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def precision_rows(runs: list[dict]) -> list[dict]:
    """Per trained method and class count: each measure in fp32 and bf16 and bf16 / fp32."""
    by_key = {(r["method"], r["classes"], prec_of(r)): r for r in runs}
    rows = []
    for method in ("LLaMP", "MaPLe"):
        for n in sorted({r["classes"] for r in runs if r["method"] == method}):
            row = {"method": method, "classes": n, "measures": {}}
            for name, (value, scaled) in {**PRECISION_MEASURES,
                                          **{k: (v, None) for k, v in PRECISION_EXTRA.items()}}.items():
                cell = {}
                for prec in ("fp32", "bf16"):
                    r = by_key.get((method, n, prec))
                    cell[prec] = None if r is None else _value(value, r)
                    if scaled and r is not None and scaled(r):
                        cell["scaled"] = True
                cell["ratio"] = cell["bf16"] / cell["fp32"] if cell["fp32"] and cell["bf16"] is not None else None
                row["measures"][name] = cell
            rows.append(row)
    return rows


def print_precision(report: dict) -> None:
    """fp32 / bf16 / bf16÷fp32 per method and class count; at the main class count LLaMP's step part by part
    and the decoder's share of the text features in both precisions."""
    rows = report.get("precision") or []
    if not rows:
        return
    names = list(PRECISION_MEASURES)
    print("\nfp32 against bf16 (PREC bf16: frozen weights in bf16, forward, losses, text features and evaluation "
          "under bf16 autocast, trained tensors and AdamW state in fp32, LLaMP's cache stored and read in bf16)")
    print(f"{'':14s}" + "".join(f" {name:^29s}" for name in names))
    print(f"{'':14s}" + "".join(f" {'fp32':>9s}{'bf16':>9s}{'bf16/fp32':>11s}" for _ in names))
    any_scaled = False
    for row in rows:
        line = f"{row['method']:6s}{row['classes']:4d} cl. "
        for name in names:
            cell = row["measures"][name]
            mark = "*" if cell.get("scaled") else " "
            any_scaled |= cell.get("scaled", False)
            line += " "
            for prec in ("fp32", "bf16"):
                line += f"{cell[prec]:8.2f}{mark}" if cell[prec] is not None else f"{'-':>8s} "
            line += f"{cell['ratio']:10.2f}x" if cell["ratio"] is not None else f"{'-':>11s}"
        print(line)
    print(f"(text features: LLaMP one template, and one evaluation = all {NUM_TEMPLATES} templates; MaPLe its one "
          "pass, which its forward repeats for every batch. Peak anonymous: the peak of RssAnon sampled while "
          "training and evaluating, build apart: tensors, heap, PyTorch, not file-backed pages. Peak RSS: the "
          "peak of anonymous + file-backed samples, the same phases: file-backed are the mapped libraries and, "
          "in fp32, CLIP's weights, which stay in their memory-mapped safetensors file; in bf16 their cast "
          "copies are anonymous)")
    if any_scaled:
        print(f"* scaled: the cache held one template; the time of one template x {NUM_TEMPLATES}")
    by_key = {(r["method"], r["classes"], prec_of(r)): r for r in report["runs"]}
    n = report["main_classes"]
    fp32, bf16 = by_key.get(("LLaMP", n, "fp32")), by_key.get(("LLaMP", n, "bf16"))
    if fp32 and bf16 and "parts_s" in fp32 and "parts_s" in bf16:
        print(f"LLaMP's step part by part at {n} classes (each part's forward + backward timed alone):")
        print(f"  {'':35s}{'fp32':>8s}{'bf16':>8s}{'bf16/fp32':>10s}")
        parts = {p: ({**fp32["parts_s"], "optimiser": fp32["step_s"]["optimiser"]}[p],
                     {**bf16["parts_s"], "optimiser": bf16["step_s"]["optimiser"]}[p])
                 for p in [*fp32["parts_s"], "optimiser"]}
        for name, (a, b) in sorted(parts.items(), key=lambda kv: -kv[1][0]):
            print(f"  {PART_NAMES[name]:35s}{a:8.2f}{b:8.2f}{b / a if a else float('nan'):9.2f}x")
    if fp32 and bf16 and "text_features_parts_s" in fp32 and "text_features_parts_s" in bf16:
        print(f"LLaMP's text features at {n} classes ({fp32.get('templates')} template(s)): LLM prompt decoder "
              + ", ".join(f"{prec} {r['text_features_parts_s']['llm_decoder']:.2f} s of {r['text_features_s']:.2f} s "
                          f"({100 * r['text_features_parts_s']['llm_decoder'] / r['text_features_s']:.0f} %)"
                          for prec, r in (("fp32", fp32), ("bf16", bf16)))
              + f"; bf16 / fp32 {bf16['text_features_s'] / fp32['text_features_s']:.2f}x")
