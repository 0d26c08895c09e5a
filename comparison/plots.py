"""One PNG per table, drawn with matplotlib's Agg backend (no display needed).

- base-to-novel: three panels (base, new, HM), grouped bars: one group per
  dataset plus the average, one bar per method, seed std as error bars;
- few-shot: accuracy against shots, one panel per dataset plus the average,
  one line per method (grouped bars when every method has one shot count);
- cross-dataset / domain generalization: grouped bars per dataset.
"""
from __future__ import annotations

from collections import defaultdict

from llamp.atomic_files import write_atomic

from .summary import BASE, HM, METHOD_ORDER, NEW, Row, Table

# Each trainer keeps its colour in every plot; LLaMP stands out.
_COLOURS = dict(zip(METHOD_ORDER, ("#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")))
_COLOURS["LLaMP"] = "#d62728"
_SPARE = ("#17becf", "#bcbd22", "#e377c2", "#393b79", "#637939", "#8c6d31")
_TITLES = {BASE: "Base classes", NEW: "New classes", HM: "Harmonic mean"}


def _colours(labels: list[tuple[str, str]]) -> dict[str, str]:
    """Colour per row label; a trainer's second config gets a spare colour."""
    out, used, spare = {}, set(), iter(_SPARE * 10)
    for label, trainer in labels:
        colour = _COLOURS.get(trainer)
        if colour is None or colour in used:
            colour = next(spare)
        used.add(colour)
        out[label] = colour
    return out


def _grouped_bars(ax, table: Table, metric: str, colours: dict[str, str]) -> None:
    rows = table.rows
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs, means, errors = [], [], []
        for g, column in enumerate(table.columns):
            cell = row.get(metric, column)
            if cell is not None:
                xs.append(g - 0.4 + width * (i + 0.5))
                means.append(cell.mean)
                errors.append(cell.std or 0.0)
        ax.bar(xs, means, width, yerr=errors if any(errors) else None, capsize=2,
               color=colours[row.label], label=row.label)
    ax.set_xticks(range(len(table.columns)))
    ax.set_xticklabels(table.columns, rotation=30 if len(table.columns) > 5 else 0, ha="right"
                       if len(table.columns) > 5 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)


def _shot_lines(fig, table: Table, colours: dict[str, str]):
    """Few-shot: one panel per column, accuracy against shots, one line per (trainer, config)."""
    import math

    series: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in table.rows:
        series[(row.trainer, row.config)].append(row)
    n = len(table.columns)
    cols = min(n, 4)
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).ravel()
    for ax, column in zip(axes, table.columns):
        for rows in series.values():
            points = sorted((r.shots, r.get(table.metrics[0], column)) for r in rows)
            points = [(s, c) for s, c in points if c is not None]
            if points:
                label = rows[0].label.split(", ")[0]
                ax.errorbar([s for s, _ in points], [c.mean for _, c in points],
                            yerr=[c.std or 0.0 for _, c in points], marker="o", capsize=2,
                            color=colours[rows[0].label], label=label)
        shots = sorted({r.shots for r in table.rows})
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(s) for s in shots])
        ax.set_title(column)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[0]


def plot_table(table: Table, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = _colours([(row.label, row.trainer) for row in table.rows])
    groups = len(table.columns)
    bar_width = max(6.0, min(30.0, 1.5 + groups * (0.35 + 0.18 * len(table.rows))))
    lines = table.name == "few_shot" and len({r.shots for r in table.rows}) > 1
    if lines:
        cols = min(groups, 4)
        fig = plt.figure(figsize=(4.0 * cols, 3.4 * -(-groups // cols) + 0.8), layout="constrained")
        legend_ax = _shot_lines(fig, table, colours)
    elif len(table.metrics) > 1:
        fig, axes = plt.subplots(len(table.metrics), 1, figsize=(bar_width, 3.2 * len(table.metrics) + 0.8),
                                 sharex=True, layout="constrained")
        for ax, metric in zip(axes, table.metrics):
            _grouped_bars(ax, table, metric, colours)
            ax.set_title(_TITLES.get(metric, metric))
        legend_ax = axes[0]
    else:
        fig, ax = plt.subplots(figsize=(bar_width, 4.2), layout="constrained")
        _grouped_bars(ax, table, table.metrics[0], colours)
        legend_ax = ax
    handles, labels = legend_ax.get_legend_handles_labels()
    # the title heads the legend: constrained layout would overlap a suptitle and an outside legend
    per_line = max(1, int(fig.get_figwidth() / (0.35 + 0.09 * max(len(label) for label in labels))))
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), per_line), frameon=False,
               title=table.title, title_fontproperties={"size": "large", "weight": "bold"})
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))  # the temp name says no format
    plt.close(fig)
