"""The performance issue's targets for LLaMP at the main class count, against an earlier run (``--baseline``)."""
from __future__ import annotations

from benchmarks.real_width_report import GIB, training_memory, whole_run_memory

# (label, value, target, target is a ratio to the baseline run (else an absolute bound)).
TARGETS = [
    ("LLaMP / MaPLe, training step", lambda rep, r: rep["ratios"]["LLaMP / MaPLe, training step"], 1.5, False),
    ("LLaMP training step (s)", lambda rep, r: r["step_s"]["total"], None, True),
    ("LLaMP text features, one evaluation (s)", lambda rep, r: r["text_features_s"], 0.5, True),
    ("LLaMP peak RSS while training (GiB)", lambda rep, r: training_memory(r)["vm_hwm"] / GIB, 0.8, True),
    ("LLaMP peak RSS with evaluation (GiB)", lambda rep, r: whole_run_memory(r)["vm_hwm"] / GIB, 0.8, True),
    ("LLaMP peak resident anonymous (GiB)", lambda rep, r: whole_run_memory(r)["anon"] / GIB, None, True),
]


def compare_with_baseline(report: dict, baseline: dict, label: str) -> dict:
    """Each target measure in ``baseline`` (an earlier run's JSON) and now, at the main class count."""
    def main_llamp(rep):
        return next(r for r in rep["runs"] if r["method"] == "LLaMP" and r["classes"] == rep["main_classes"]
                    and r.get("prec", "fp32") == "fp32")

    then, now = main_llamp(baseline), main_llamp(report)
    rows = []
    for name, value, target, relative in TARGETS:
        before, after = value(baseline, then), value(report, now)
        met = None if target is None else (after / before if relative else after) <= target
        rows.append({"measure": name, "baseline": before, "now": after, "ratio": after / before,
                     "target": None if target is None else (f"<= {target}x baseline" if relative else f"<= {target}"),
                     "met": met})
    return {"file": label, "load": baseline.get("load_before"), "rows": rows}


def print_baseline(comparison: dict) -> None:
    print(f"\nAgainst the baseline run {comparison['file']} (its {comparison['load']} at start):")
    print(f"{'':42s}{'baseline':>10s}{'now':>9s}{'now/base':>10s}  target")
    for row in comparison["rows"]:
        verdict = "" if row["met"] is None else ("met" if row["met"] else "NOT met")
        print(f"{row['measure']:42s}{row['baseline']:10.2f}{row['now']:9.2f}{row['ratio']:9.2f}x  "
              f"{row['target'] or '':22s}{verdict}")
