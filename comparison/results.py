"""Result tables of the protocol runs under an output folder.

    python -m comparison.results OUTPUT_DIR [--out DIR] [--protocol base2new|few_shot|xd ...]
        [--datasets D ...] [--methods TRAINER ...] [--seeds S ...] [--no-plots]

Reads every run folder of the layout in ``comparison/layout.py`` (what
``scripts/<method>/*.sh`` write), prints one table per protocol (methods ×
datasets plus the average), then the incomplete runs, and writes to --out
(default OUTPUT_DIR/results):

    <table>.txt / .csv / .md / .png   base2new, few_shot, xd_cross_dataset, xd_domain_generalization
    runs.csv                          every run read (protocol, stage, dataset, shots, trainer, config,
                                      seed, accuracy, log file)
    incomplete.txt                    runs left out or missing (empty when there are none)

Exit status 1 when no run is found.
"""
from __future__ import annotations

import argparse
import os
import sys

from llamp.atomic_files import write_text_atomic

from .layout import PROTOCOLS, Run, find_runs
from .render import runs_csv, to_csv, to_markdown, to_text
from .summary import Summary, summarize


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparison.results",
                                     description="Mean ± std tables (text, CSV, Markdown) and PNG plots of the "
                                                 "protocol runs under OUTPUT_DIR.")
    parser.add_argument("output_dir", help="folder the scripts wrote to (e.g. output)")
    parser.add_argument("--out", default="", help="where to write the tables and plots (default: OUTPUT_DIR/results)")
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, help="only these protocols")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (configs/datasets/<name>.yaml names)")
    parser.add_argument("--methods", nargs="+",
                        help="only these trainers (e.g. CoOp LLaMP); one with no run is listed as incomplete")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--configs", nargs="+", help="only these configs (configs/trainers/<Trainer>/<cfg>.yaml names)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
    return parser


def select(runs: list[Run], args: argparse.Namespace) -> list[Run]:
    def keep(run: Run) -> bool:
        return ((not args.protocol or run.protocol in args.protocol)
                and (not args.datasets or run.dataset in args.datasets)
                and (not args.methods or run.trainer.lower() in {m.lower() for m in args.methods})
                and (not args.seeds or run.seed in args.seeds)
                and (not args.configs or run.config in args.configs))

    return [r for r in runs if keep(r)]


def write_outputs(summary: Summary, runs: list[Run], out: str, plots: bool = True) -> list[str]:
    """Write every table's files, runs.csv and incomplete.txt into ``out``; returns the paths written."""
    os.makedirs(out, exist_ok=True)
    written = []

    def write(name: str, text: str) -> None:
        path = os.path.join(out, name)
        write_text_atomic(path, text)
        written.append(path)

    for table in summary.tables:
        mine = [i for i in summary.incomplete if i.protocol == table.protocol]
        write(f"{table.name}.txt", to_text(table) + "\n")
        write(f"{table.name}.csv", to_csv(table))
        write(f"{table.name}.md", to_markdown(table, mine))
        if plots:
            from .plots import plot_table

            path = os.path.join(out, f"{table.name}.png")
            plot_table(table, path)
            written.append(path)
    write("runs.csv", runs_csv(runs))
    write("incomplete.txt", "".join(f"[{i.protocol}] {i.what}\n" for i in summary.incomplete))
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.output_dir):
        print(f"error: {args.output_dir} is not a folder (give the folder the scripts wrote to, e.g. output)",
              file=sys.stderr)
        return 2
    found, unrecognised = find_runs(args.output_dir)
    runs = select(found, args)
    if not runs:
        print(f"no runs found under {args.output_dir} (expected e.g. base2new/train_base/<dataset>/shots_16/"
              f"<Trainer>/<cfg>/seed1/log.txt){' matching the filters' if found else ''}", file=sys.stderr)
        return 1
    summary = summarize(runs, args.methods)
    finished = sum(r.accuracy is not None for r in runs)
    print(f"{len(runs)} runs under {args.output_dir} ({finished} with a result)\n")
    for table in summary.tables:
        print(to_text(table) + "\n")
    if summary.incomplete:
        print(f"Incomplete runs ({len(summary.incomplete)}):")
        for item in summary.incomplete:
            print(f"  [{item.protocol}] {item.what}")
        print()
    if unrecognised:
        print(f"{len(unrecognised)} seed folder(s) outside the layout, not read, e.g. {unrecognised[0]}\n")
    out = args.out or os.path.join(args.output_dir, "results")
    written = write_outputs(summary, runs, out, plots=not args.no_plots)
    print(f"wrote {len(written)} files to {out}: {', '.join(sorted(os.path.basename(p) for p in written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
