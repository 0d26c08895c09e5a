"""From runs to tables: seed averages, harmonic means, dataset averages, and what is missing.

Numbers follow the papers' conventions (CoOp, CoCoOp, MaPLe, PromptSRC):
- a cell is the mean over seeds, with the population standard deviation
  (numpy's default, as the ecosystem's ``parse_test_res.py``); one seed has no std;
- base-to-novel HM = 2·base·new / (base + new) of the seed-averaged base and new;
- the average column is the mean over datasets of the seed-averaged cells, and
  its HM is the HM of the average base and average new. A row that lacks a
  dataset the table holds gets no average (it would not be comparable);
- cross-dataset / domain-generalization averages are over the target datasets only.

Nothing is dropped silently: runs without a result, a base run without its new
run (or the reverse), an ImageNet-trained model's test without its training
run, seeds that other methods have, and datasets that other methods have are
each listed as :class:`Incomplete`.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from .layout import BASE2NEW, FEW_SHOT, TEST_NEW, TRAIN_BASE, XD, XD_TEST, XD_TRAIN, Run

# Rows: the baselines in the order the papers list them, other trainers, then LLaMP.
METHOD_ORDER = ("ZeroshotCLIP", "CoOp", "CoCoOp", "KgCoOp", "MaPLe", "PromptSRC")
LAST_METHOD = "LLaMP"
# Columns: the 11 benchmark datasets in the papers' order, then the ImageNet variants.
DATASET_ORDER = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
                 "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
AVERAGE = "average"
BASE, NEW, HM, ACCURACY = "base", "new", "HM", "accuracy"

Method = tuple[str, str, int]  # (trainer, config, shots)


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float | None = None  # over seeds; None for one seed and for derived numbers (HM, average)
    seeds: tuple[int, ...] = ()  # the seeds averaged; empty for derived numbers
    short: bool = False  # fewer seeds than other methods have on this dataset


@dataclass
class Row:
    trainer: str
    config: str
    shots: int
    label: str = ""
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (metric, column) -> cell

    def get(self, metric: str, column: str) -> Cell | None:
        return self.cells.get((metric, column))


@dataclass
class Table:
    name: str  # file stem: base2new, few_shot, xd_cross_dataset, xd_domain_generalization
    title: str
    protocol: str
    metrics: tuple[str, ...]
    columns: list[str]  # datasets, then "average"
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Incomplete:
    protocol: str
    what: str


@dataclass
class Summary:
    tables: list[Table]
    incomplete: list[Incomplete]


def harmonic_mean(base: float, new: float) -> float:
    return 2 * base * new / (base + new) if base + new else 0.0


def seed_cell(by_seed: dict[int, float], expected: set[int]) -> Cell:
    values = [by_seed[s] for s in sorted(by_seed)]
    std = statistics.pstdev(values) if len(values) > 1 else None
    return Cell(statistics.fmean(values), std, tuple(sorted(by_seed)), short=bool(expected - set(by_seed)))


def method_key(method: Method) -> tuple:
    trainer, config, shots = method
    if trainer in METHOD_ORDER:
        rank = (0, METHOD_ORDER.index(trainer), "")
    elif trainer == LAST_METHOD:
        rank = (2, 0, "")
    else:
        rank = (1, 0, trainer.lower())
    return (*rank, config, shots)


def dataset_key(dataset: str) -> tuple:
    return (DATASET_ORDER.index(dataset), "") if dataset in DATASET_ORDER else (len(DATASET_ORDER), dataset)


def describe(method: Method) -> str:
    trainer, config, shots = method
    return f"{trainer} [{config}, {shots} shots]"


def _label_rows(methods: list[Method]) -> dict[Method, str]:
    """Trainer name, plus the config / shots only where the table needs them to tell rows apart."""
    configs = defaultdict(set)
    for trainer, config, _ in methods:
        configs[trainer].add(config)
    many_shots = len({shots for _, _, shots in methods}) > 1
    labels = {}
    for method in methods:
        trainer, config, shots = method
        label = trainer + (f" [{config}]" if len(configs[trainer]) > 1 else "")
        labels[method] = label + (f", {shots} shot{'s' if shots != 1 else ''}" if many_shots else "")
    return labels


class _Grid:
    """Accuracies of one protocol stage: (dataset, method) -> {seed: accuracy}, plus every seed that has a folder."""

    def __init__(self, runs: list[Run]):
        self.values: dict[tuple[str, Method], dict[int, float]] = defaultdict(dict)
        self.folders: dict[tuple[str, Method], set[int]] = defaultdict(set)
        for run in runs:
            self.folders[(run.dataset, run.method)].add(run.seed)
            if run.accuracy is not None:
                self.values[(run.dataset, run.method)][run.seed] = run.accuracy


def _expected_seeds(grids: list[_Grid]) -> dict[tuple[str, int], set[int]]:
    """Per (dataset, shots): every seed some method has a result for."""
    expected: dict[tuple[str, int], set[int]] = defaultdict(set)
    for grid in grids:
        for (dataset, method), by_seed in grid.values.items():
            expected[(dataset, method[2])] |= set(by_seed)
    return expected


def _fill_average(table: Table, averaged: list[str]) -> None:
    """The average column over ``averaged`` for rows that have every one of those datasets."""
    if not averaged:
        return
    for row in table.rows:
        means = {}
        for metric in table.metrics:
            if metric == HM:
                continue
            cells = [row.get(metric, c) for c in averaged]
            if all(cells):
                means[metric] = statistics.fmean(c.mean for c in cells)
                row.cells[(metric, AVERAGE)] = Cell(means[metric])
        if HM in table.metrics and BASE in means and NEW in means:
            row.cells[(HM, AVERAGE)] = Cell(harmonic_mean(means[BASE], means[NEW]))


def _missing(protocol: str, grids: list[_Grid], columns: list[str], methods: list[Method],
             expected: dict[tuple[str, int], set[int]], what: str) -> list[Incomplete]:
    """Seeds and datasets other methods have and a method lacks (no folder at all)."""
    out = []
    for method in methods:
        for dataset in columns:
            present = set().union(*(g.folders.get((dataset, method), set()) for g in grids))
            if not present:
                others = [m for m in methods if any((dataset, m) in g.values for g in grids)]
                if others:
                    out.append(Incomplete(protocol, f"{describe(method)}: no {what} run on {dataset} "
                                                    f"(other methods have one; no average for this row)"))
                continue
            lacking = expected.get((dataset, method[2]), set()) - present
            if lacking:
                out.append(Incomplete(protocol, f"{describe(method)} on {dataset}: seed(s) "
                                                f"{', '.join(map(str, sorted(lacking)))} missing (other methods "
                                                f"have them)"))
    return out


def _no_result(runs: list[Run]) -> list[Incomplete]:
    out = []
    for run in runs:
        if run.accuracy is None:
            what = f"{run.log}: no accuracy line (still running, failed or killed?)" if run.log \
                else f"{run.folder}: no log.txt"
            out.append(Incomplete(run.protocol, what))
    return out


def _base2new(runs: list[Run]) -> tuple[list[Table], list[Incomplete]]:
    base = _Grid([r for r in runs if r.stage == TRAIN_BASE])
    new = _Grid([r for r in runs if r.stage == TEST_NEW])
    incomplete = []
    for (dataset, method), seeds in base.values.items():
        for seed in sorted(set(seeds) - set(new.values.get((dataset, method), {}))):
            incomplete.append(Incomplete(BASE2NEW, f"{describe(method)} on {dataset}, seed {seed}: base run "
                                                   f"without its new-class result (run base2new_test.sh)"))
    for (dataset, method), seeds in new.values.items():
        for seed in sorted(set(seeds) - set(base.values.get((dataset, method), {}))):
            incomplete.append(Incomplete(BASE2NEW, f"{describe(method)} on {dataset}, seed {seed}: new-class "
                                                   f"result without its base result"))
    keys = set(base.folders) | set(new.folders)
    columns = sorted({d for d, _ in keys}, key=dataset_key)
    methods = sorted({m for _, m in keys}, key=method_key)
    expected = _expected_seeds([base, new])
    incomplete += _missing(BASE2NEW, [base, new], columns, methods, expected, "base-to-novel")

    labels = _label_rows(methods)
    rows = []
    for method in methods:
        row = Row(*method, label=labels[method])
        for dataset in columns:
            want = expected.get((dataset, method[2]), set())
            for metric, grid in ((BASE, base), (NEW, new)):
                if grid.values.get((dataset, method)):
                    row.cells[(metric, dataset)] = seed_cell(grid.values[(dataset, method)], want)
            if row.get(BASE, dataset) and row.get(NEW, dataset):
                row.cells[(HM, dataset)] = Cell(harmonic_mean(row.get(BASE, dataset).mean,
                                                              row.get(NEW, dataset).mean))
        rows.append(row)
    table = Table(BASE2NEW, "Base-to-novel generalization", BASE2NEW, (BASE, NEW, HM),
                  columns + [AVERAGE], rows,
                  notes=["accuracy (%), mean ± std over seeds; HM of the seed-averaged base and new",
                         "average: mean over the datasets; its HM is the HM of the average base and new"])
    _fill_average(table, columns)
    return [table], incomplete


def _few_shot(runs: list[Run]) -> tuple[list[Table], list[Incomplete]]:
    grid = _Grid(runs)
    columns = sorted({d for d, _ in grid.folders}, key=dataset_key)
    methods = sorted({m for _, m in grid.folders}, key=method_key)
    expected = _expected_seeds([grid])
    incomplete = _missing(FEW_SHOT, [grid], columns, methods, expected, "few-shot")
    labels = _label_rows(methods)
    rows = []
    for method in methods:
        row = Row(*method, label=labels[method])
        for dataset in columns:
            if grid.values.get((dataset, method)):
                row.cells[(ACCURACY, dataset)] = seed_cell(grid.values[(dataset, method)],
                                                           expected.get((dataset, method[2]), set()))
        rows.append(row)
    table = Table(FEW_SHOT, "Few-shot learning (all classes)", FEW_SHOT, (ACCURACY,), columns + [AVERAGE], rows,
                  notes=["accuracy (%), mean ± std over seeds; average: mean over the datasets"])
    _fill_average(table, columns)
    return [table], incomplete


def _xd(runs: list[Run]) -> tuple[list[Table], list[Incomplete]]:
    source = _Grid([r for r in runs if r.stage == XD_TRAIN])
    target = _Grid([r for r in runs if r.stage == XD_TEST])
    incomplete = []
    trained = defaultdict(set)  # method -> seeds with a finished training run
    for (_, method), seeds in source.values.items():
        trained[method] |= set(seeds)
    for (dataset, method), seeds in target.values.items():
        for seed in sorted(set(seeds) - trained[method]):
            incomplete.append(Incomplete(XD, f"{describe(method)} on {dataset}, seed {seed}: test of an "
                                             f"ImageNet model whose training run has no result"))
    sources = sorted({d for d, _ in source.folders}, key=dataset_key)
    targets = sorted({d for d, _ in target.folders}, key=dataset_key)
    methods = sorted({m for _, m in set(source.folders) | set(target.folders)}, key=method_key)
    expected = _expected_seeds([source, target])
    incomplete += _missing(XD, [source], sources, methods, expected, "ImageNet training")
    incomplete += _missing(XD, [target], targets, methods, expected, "cross-dataset test")
    labels = _label_rows(methods)

    dg = [d for d in targets if d in DG_TARGETS]
    cross = [d for d in targets if d not in DG_TARGETS]
    parts = []
    if cross or not dg:
        parts.append(("xd_cross_dataset", "Cross-dataset transfer (trained on ImageNet)", cross))
    if dg:
        parts.append(("xd_domain_generalization", "Domain generalization (trained on ImageNet)", dg))
    tables = []
    for name, title, averaged in parts:
        rows = []
        for method in methods:
            row = Row(*method, label=labels[method])
            for grid, datasets in ((source, sources), (target, averaged)):
                for dataset in datasets:
                    if grid.values.get((dataset, method)):
                        row.cells[(ACCURACY, dataset)] = seed_cell(grid.values[(dataset, method)],
                                                                   expected.get((dataset, method[2]), set()))
            rows.append(row)
        source_note = f"{', '.join(sources)}: the source" if sources else "no source (training) runs"
        table = Table(name, title, XD, (ACCURACY,), sources + averaged + [AVERAGE], rows,
                      notes=[f"accuracy (%), mean ± std over seeds; {source_note}; "
                             f"average: mean over the target datasets"])
        _fill_average(table, averaged)
        tables.append(table)
    return tables, incomplete


_BUILDERS = {BASE2NEW: _base2new, FEW_SHOT: _few_shot, XD: _xd}


def summarize(runs: list[Run], expected_trainers: list[str] | None = None) -> Summary:
    """Tables for each protocol that has runs, in the order base2new, few_shot, xd.

    ``expected_trainers``: trainers that should be there (e.g. what compare.sh ran);
    one with no run at all in a protocol that has runs is listed as incomplete.
    """
    tables, incomplete = [], []
    for protocol, build in _BUILDERS.items():
        mine = [r for r in runs if r.protocol == protocol]
        if not mine:
            continue
        incomplete += _no_result(mine)
        built, missing = build(mine)
        tables += built
        incomplete += missing
        present = {r.trainer for r in mine}
        for trainer in expected_trainers or []:
            if trainer not in present:
                incomplete.append(Incomplete(protocol, f"{trainer}: no runs at all"))
    return Summary(tables, incomplete)
