"""The accuracy a finished run wrote to its log.

Dassl's evaluator prints ``* accuracy: 83.4%`` after ``Evaluate on the *test*
set``; a training run with validation also prints accuracy blocks headed
``*val*``, which are not results. A run's result is the last accuracy line
outside a val block. Dassl never overwrites a log: a run started again in the
same folder writes ``log.txt-<date>-<time>`` next to ``log.txt``, so the
newest of those files that holds a result wins.

    python -m comparison.logs RUN_FOLDER    prints the accuracy; exit status 1 if there is none
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

LOG_NAME = "log.txt"
_ACCURACY = re.compile(r"^\* accuracy: ([-+\d.eE]+)%")
_SPLIT_HEADER = re.compile(r"^Evaluate on the \*(\w+)\* set")


@dataclass(frozen=True)
class LogResult:
    accuracy: float | None  # None: the log holds no result (running, failed or killed)
    log: str | None  # the log file read; None: the folder has no log


def accuracy_in_log(text: str) -> float | None:
    """The last test accuracy printed in one log's text, or None."""
    result = None
    split = "test"  # an accuracy line with no header before it counts as a result
    for line in text.splitlines():
        line = line.strip()
        header = _SPLIT_HEADER.match(line)
        if header:
            split = header.group(1)
            continue
        match = _ACCURACY.match(line)
        if match and split != "val":
            result = float(match.group(1))
    return result


def log_files(folder: str) -> list[str]:
    """``log.txt`` and its restarted siblings ``log.txt-<date>-<time>``, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    logs = [n for n in names if n == LOG_NAME or n.startswith(LOG_NAME + "-")]
    # "log.txt" sorts before "log.txt-2024-...", and the timestamps sort in time order
    return [os.path.join(folder, n) for n in sorted(logs)]


def read_run(folder: str) -> LogResult:
    """The result of the run in ``folder``: from the newest log file that holds one."""
    files = log_files(folder)
    for path in reversed(files):
        with open(path, encoding="utf-8", errors="replace") as f:
            accuracy = accuracy_in_log(f.read())
        if accuracy is not None:
            return LogResult(accuracy, path)
    return LogResult(None, files[-1] if files else None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    result = read_run(args[0])
    if result.accuracy is None:
        where = result.log or f"{args[0]} (no {LOG_NAME})"
        print(f"no result in {where}", file=sys.stderr)
        return 1
    print(f"{result.accuracy:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
