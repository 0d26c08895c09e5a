"""Tables as aligned text (for the terminal), CSV (numbers) and Markdown (for notes and issues).

One line per method and metric (base / new / HM for base-to-novel), one
column per dataset plus the average. A cell reads ``83.40 ± 0.52``; ``*``
marks a mean over fewer seeds than other methods have there; ``-`` is no result.
"""
from __future__ import annotations

import csv
import io

from .layout import Run
from .summary import Cell, Incomplete, Table

MISSING = "-"
SHORT_MARK = "*"
SHORT_NOTE = f"{SHORT_MARK} fewer seeds than other methods on that dataset (see the incomplete runs)"


def format_cell(cell: Cell | None, mark: str = SHORT_MARK) -> str:
    if cell is None:
        return MISSING
    text = f"{cell.mean:.2f}" + (f" ± {cell.std:.2f}" if cell.std is not None else "")
    return text + (mark if cell.short else "")


def _lines(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and body of a table as strings; the metric column only when there are several metrics."""
    many = len(table.metrics) > 1
    header = ["method"] + (["metric"] if many else []) + table.columns
    body = []
    for row in table.rows:
        for i, metric in enumerate(table.metrics):
            label = row.label if i == 0 else ""
            cells = [format_cell(row.get(metric, c)) for c in table.columns]
            body.append([label] + ([metric] if many else []) + cells)
    return header, body


def _notes(table: Table) -> list[str]:
    short = any(cell.short for row in table.rows for cell in row.cells.values())
    return table.notes + ([SHORT_NOTE] if short else [])


def to_text(table: Table) -> str:
    header, body = _lines(table)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    label_columns = 2 if len(table.metrics) > 1 else 1

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < label_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"== {table.title} ({table.name}) ==", line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out += [f"   {note}" for note in _notes(table)]
    return "\n".join(out)


def _best(table: Table) -> set[tuple[str, str, int]]:
    """(metric, column, row index) of the highest mean in each column, for bold in Markdown."""
    best = set()
    for metric in table.metrics:
        for column in table.columns:
            cells = [(row.get(metric, column), i) for i, row in enumerate(table.rows)]
            cells = [(c.mean, i) for c, i in cells if c is not None]
            if len(cells) > 1:
                top = max(m for m, _ in cells)
                best |= {(metric, column, i) for m, i in cells if m == top}
    return best


def to_markdown(table: Table, incomplete: list[Incomplete] = ()) -> str:
    many = len(table.metrics) > 1
    best = _best(table)
    header = ["method"] + (["metric"] if many else []) + table.columns
    out = [f"### {table.title}", "", "| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] * (2 if many else 1) + ["---:"] * len(table.columns)) + "|"]
    for i, row in enumerate(table.rows):
        for j, metric in enumerate(table.metrics):
            cells = []
            for column in table.columns:
                cell = row.get(metric, column)
                text = format_cell(cell, mark="")
                if (metric, column, i) in best:
                    text = f"**{text}**"
                cells.append(text + ("\\" + SHORT_MARK if cell is not None and cell.short else ""))
            label = row.label if j == 0 else ""
            out.append("| " + " | ".join([label] + ([metric] if many else []) + cells) + " |")
    out += [""] + [f"- {note}".replace(SHORT_MARK + " ", "\\" + SHORT_MARK + " ") for note in _notes(table)]
    if incomplete:
        out += ["", "Incomplete runs:", ""] + [f"- {item.what}" for item in incomplete]
    return "\n".join(out) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def to_csv(table: Table) -> str:
    """One line per method and metric; per column its mean and its std (empty where there is none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = []
    for column in table.columns:
        columns += [column, f"{column} std"]
    writer.writerow(["method", "trainer", "config", "shots", "metric"] + columns)
    for row in table.rows:
        for metric in table.metrics:
            values = []
            for column in table.columns:
                cell = row.get(metric, column)
                values += [_number(None if cell is None else cell.mean), _number(None if cell is None else cell.std)]
            writer.writerow([row.label, row.trainer, row.config, row.shots, metric] + values)
    return buffer.getvalue()


def runs_csv(runs: list[Run]) -> str:
    """Every run read, one line each: where the tables' numbers come from."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["protocol", "stage", "dataset", "shots", "trainer", "config", "seed", "accuracy", "log"])
    for r in runs:
        writer.writerow([r.protocol, r.stage, r.dataset, r.shots, r.trainer, r.config, r.seed,
                         "" if r.accuracy is None else f"{r.accuracy:g}", r.log or ""])
    return buffer.getvalue()
