"""What a GPU's peak memory is derived from: LLaMP's measured bytes at each class count of a real-width run,
their fits in classes, and the estimate of a bf16 step's and evaluation's peak at ImageNet's class counts."""
from __future__ import annotations

from benchmarks.real_width_assets import BATCH, NUM_TEMPLATES
from benchmarks.real_width_report import GIB, fit_line, prec_of

GPU_CLASSES = (24, 100, 500, 1000)  # the GPU memory estimate's class counts
GPU_BUDGETS_GIB = (24, 40, 80)  # GPU memory sizes (as GPUs are sold: "24 GB" etc., read as GiB)
CUDA_CONTEXT_GIB = 0.5  # CUDA's context and kernels: outside PyTorch's tensors, not measured here


def _fit(points: list[tuple[int, float]]) -> dict | None:
    if len(points) < 2:
        return None
    a, b = fit_line(points)
    return {"at": {str(n): v for n, v in points}, "intercept": a, "per_class": b}


def _line(fit: dict | None, n: int) -> float:
    return 0.0 if fit is None else fit["intercept"] + fit["per_class"] * n


def gpu_memory_inputs(runs: list[dict], prec: str = "bf16") -> dict:
    """LLaMP's measured bytes at each class count in ``prec``, their fits in classes, and the GPU estimate.

    Measured per run: trained tensors (fp32), frozen weights (by dtype), buffers, AdamW's state (the tensors of
    its state_dict), one template's K/V rows per class as staged for the device, the evaluation's text
    features per class (all NUM_TEMPLATES templates: per template x NUM_TEMPLATES), and of the resident
    anonymous memory: its peak while training, its growth during training over what the process held when
    training began (AdamW's state, gradients, activations kept for the backward, the K/V rows of one template,
    temporaries) and during the evaluation over what it held when the evaluation began.

    The estimate (GiB): step(C) = weights(C) + train_growth(C) + CUDA context; evaluation(C) = weights(C) +
    AdamW state + eval_growth(C) + text_features(C) + CUDA context, where weights = frozen + trained +
    buffers, each ``x(C)`` the line fitted over the measured class counts.
    """
    llamp = sorted((r for r in runs if r["method"] == "LLaMP" and prec_of(r) == prec and r.get("model_bytes")),
                   key=lambda r: r["classes"])
    if not llamp:
        return {}
    at = {}
    for r in llamp:
        b, mem = r["model_bytes"], r["memory"]
        weights = b["trainable"] + sum(b["frozen"].values()) + b["buffers"]
        text = b.get("text_features_per_class", 0.0) / (r.get("templates") or 1) * NUM_TEMPLATES
        at[r["classes"]] = {
            "trainable_bytes": b["trainable"], "frozen_bytes": b["frozen"], "buffer_bytes": b["buffers"],
            "weights_bytes": weights, "optimizer_state_bytes": b["optimizer_state"],
            "kv_bytes_per_class_template": b.get("kv_per_class_template"), "kv_dtype": b.get("kv_dtype"),
            "text_features_bytes_per_class": text,
            "train_start_anon": mem["train"].get("start_anon"), "train_peak_anon": mem["train"]["anon"],
            "train_growth": mem["train"]["anon"] - mem["train"].get("start_anon", 0),
            "eval_start_anon": mem["eval"].get("start_anon"), "eval_peak_anon": mem["eval"]["anon"],
            "eval_growth": mem["eval"]["anon"] - mem["eval"].get("start_anon", 0),
        }
    fits = {name: _fit([(n, v[name]) for n, v in at.items()])
            for name in ("weights_bytes", "train_peak_anon", "train_growth", "eval_growth")}
    out = {"prec": prec, "at": {str(n): v for n, v in at.items()}, "fits": fits}
    if fits["train_growth"] is None:
        return out
    last = at[max(at)]
    adamw, text = last["optimizer_state_bytes"], last["text_features_bytes_per_class"]
    context = CUDA_CONTEXT_GIB * GIB
    estimate = {}
    for n in GPU_CLASSES:
        weights = _line(fits["weights_bytes"], n)
        step = weights + _line(fits["train_growth"], n) + context
        evaluation = weights + adamw + _line(fits["eval_growth"], n) + n * text + context
        estimate[str(n)] = {"step_gib": step / GIB, "eval_gib": evaluation / GIB}
    per_class = max(fits["weights_bytes"]["per_class"] + fits["train_growth"]["per_class"],
                    fits["weights_bytes"]["per_class"] + fits["eval_growth"]["per_class"] + text)
    fixed = max(fits["weights_bytes"]["intercept"] + fits["train_growth"]["intercept"],
                fits["weights_bytes"]["intercept"] + adamw + fits["eval_growth"]["intercept"]) + context
    out["estimate"] = {"classes": estimate, "fixed_gib": fixed / GIB, "per_class_mib": per_class / 2 ** 20,
                       "cuda_context_gib": CUDA_CONTEXT_GIB,
                       "largest_class_count": {str(g): int((g * GIB - fixed) // per_class) if per_class > 0 else None
                                               for g in GPU_BUDGETS_GIB}}
    return out


def print_gpu_memory(report: dict) -> None:
    """The measured bytes per class count and the GPU estimate derived from them."""
    g = report.get("gpu_memory") or {}
    if not g.get("at"):
        return
    counts = sorted(int(n) for n in g["at"])
    rows = [
        ("trainable tensors, fp32 (MiB)", lambda v: v["trainable_bytes"] / 2 ** 20),
        ("AdamW state, state_dict tensors (MiB)", lambda v: v["optimizer_state_bytes"] / 2 ** 20),
        ("frozen weights, bf16 (MiB)", lambda v: v["frozen_bytes"].get("bfloat16", 0) / 2 ** 20),
        ("frozen weights, other dtypes (MiB)", lambda v: sum(b for d, b in v["frozen_bytes"].items()
                                                             if d != "bfloat16") / 2 ** 20),
        ("buffers (MiB)", lambda v: v["buffer_bytes"] / 2 ** 20),
        ("K/V rows per class, one template (MiB)", lambda v: (v["kv_bytes_per_class_template"] or 0) / 2 ** 20),
        (f"text features per class, {NUM_TEMPLATES} templates (KiB)",
         lambda v: v["text_features_bytes_per_class"] / 1024),
        ("resident anonymous at training start (GiB)", lambda v: (v["train_start_anon"] or 0) / GIB),
        ("peak resident anonymous, training (GiB)", lambda v: v["train_peak_anon"] / GIB),
        ("  growth during training (GiB)", lambda v: v["train_growth"] / GIB),
        ("resident anonymous at evaluation start (GiB)", lambda v: (v["eval_start_anon"] or 0) / GIB),
        ("  growth during the evaluation (GiB)", lambda v: v["eval_growth"] / GIB),
    ]
    kv_dtype = g["at"][str(counts[0])].get("kv_dtype")
    print(f"\nLLaMP {g['prec']}: measured bytes for a GPU memory table (K/V rows in {kv_dtype}; "
          f"resident anonymous memory of this CPU process)")
    print(f"{'':46s}" + "".join(f"{n:>10d}" for n in counts))
    for label, fn in rows:
        print(f"{label:46s}" + "".join(f"{fn(g['at'][str(n)]):10.2f}" for n in counts))
    fit_names = {"weights_bytes": "weights (frozen + trained + buffers)", "train_peak_anon": "peak resident anon, "
                 "training", "train_growth": "growth during training", "eval_growth": "growth during evaluation"}
    for name, label in fit_names.items():
        fit = g["fits"].get(name)
        if fit:
            print(f"  fitted a + b x classes, {label:38s} a {fit['intercept'] / GIB:6.2f} GiB, "
                  f"b {fit['per_class'] / 2 ** 20:7.2f} MiB per class")
    e = g.get("estimate")
    if not e:
        return
    print(f"Estimate of LLaMP's peak GPU memory in {g['prec']} (batch {BATCH}; derived from the lines above, not "
          "measured on a GPU): step = weights + growth during training + CUDA context; evaluation = weights + "
          "AdamW state + growth during evaluation + text features + CUDA context "
          f"(context {e['cuda_context_gib']} GiB, assumed)")
    print("  classes " + "".join(f"{n:>9s}" for n in e["classes"]))
    print("  step    " + "".join(f"{v['step_gib']:8.1f}G" for v in e["classes"].values()))
    print("  eval    " + "".join(f"{v['eval_gib']:8.1f}G" for v in e["classes"].values()))
    print(f"  largest class count (fixed {e['fixed_gib']:.2f} GiB + {e['per_class_mib']:.2f} MiB per class): "
          + ", ".join(f"{gib} GiB: {n}" for gib, n in e["largest_class_count"].items()))
