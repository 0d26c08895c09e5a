"""Command line for the dataset folders.

    python -m vl_datasets import-fewshot split_fewshot/shot_16-seed_1.pkl [...] --root DATA \\
        --dataset-config-file configs/datasets/oxford_pets.yaml [--from OLD_DATASET_DIR] [--force]

``import-fewshot`` turns CoOp / MaPLe few-shot pickles into this toolbox's JSON
few-shot cache, so that the same seed trains on the same images as the earlier
run. A user error prints one ``error:`` line and exits with 2.
"""
from __future__ import annotations

from llamp.quiet import quiet_logs

quiet_logs()  # before Dassl is imported

import argparse  # noqa: E402
import sys  # noqa: E402

from llamp.errors import ConfigError, run_command  # noqa: E402

IMPORT_HELP = """\
Convert few-shot samples drawn by CoOp, MaPLe or another Dassl-based repository
(<dataset>/split_fewshot/shot_K-seed_S.pkl) into this toolbox's JSON cache
(<root>/<dataset>/split_fewshot/shot_K-seed_S.json), so that train.py with
--seed S and DATASET.NUM_SHOTS K uses exactly those images.

Safety: loading a pickle can run arbitrary code. These files are read by a
restricted unpickler that admits only Dassl's Datum (as a plain record: not
even Dassl's code runs) inside lists and a dict; a file naming any other class
or function is refused before anything in it is called. Still, import only
files you or your group wrote.

Image paths: the pickle holds absolute paths of the machine that drew the
sample. The part up to the dataset's folder name (e.g. /home/me/data/oxford_pets)
is replaced by <root>/<folder> (printed); give the old folder with --from when
it was named differently. Every image must exist there and sit in the
dataset's train (val) list with the same label and class name, or nothing is
written. An existing JSON with another sample is kept unless --force."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vl_datasets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import-fewshot", help="convert CoOp/MaPLe split_fewshot/*.pkl into our JSON cache",
                              description=IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("pickles", nargs="+", metavar="FILE.pkl", help="shot_K-seed_S.pkl file(s)")
    imp.add_argument("--root", required=True, help="folder that holds the datasets (as train.py --root)")
    imp.add_argument("--dataset-config-file", required=True, help="configs/datasets/<dataset>.yaml")
    imp.add_argument("--from", dest="old_dir", default=None, metavar="DIR",
                     help="the dataset folder as the pickle's paths have it (default: found in the paths by "
                          "the dataset's folder name)")
    imp.add_argument("--shots", type=int, default=None, help="K, if the file name is not shot_K-seed_S.pkl")
    imp.add_argument("--seed", type=int, default=None, help="S, if the file name is not shot_K-seed_S.pkl")
    imp.add_argument("--force", action="store_true", help="replace an existing JSON that holds another sample")
    return parser


def run_import(args: argparse.Namespace) -> None:
    from .fewshot_import import import_fewshot

    if len(args.pickles) > 1 and (args.shots is not None or args.seed is not None):
        raise ConfigError("--shots and --seed apply to a single FILE.pkl")
    for path in args.pickles:
        report = import_fewshot(path, args.root, args.dataset_config_file, shots=args.shots, seed=args.seed,
                                old_dir=args.old_dir, force=args.force)
        counts = ", ".join(f"{n} {key}" for key, n in report.counts.items())
        moved = "unchanged" if report.old_dir == report.new_dir else f"{report.old_dir} -> {report.new_dir}"
        state = "written" if report.written else "already up to date"
        print(f"{path}: {counts} images; paths {moved}; {report.target} {state}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run_import(args))


if __name__ == "__main__":
    sys.exit(main())
