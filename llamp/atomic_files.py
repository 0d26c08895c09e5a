"""Writing files so that a reader (or a killed writer) never finds half of one.

Every file the project writes goes through here. A file is written under a
temporary name in its own folder, flushed to disk (fsync), renamed into place,
and the folder is synced: the rename is atomic on POSIX, so a reader finds the
old file or the new one, never a mix, and once the call returns the new one
survives a crash of the machine too. A killed writer leaves at most a
``.<name>.<random>.tmp`` file (or folder) beside the target, which nothing
reads and which may be deleted. A full disk or a read-only folder is one
ConfigError line naming the file; the temporary file is removed and the file
it would have replaced is untouched. Two variants: a folder of many files
(a model, a drawn dataset) is filled under a temporary name and renamed whole
(:func:`write_folder_atomic`); a journal is appended to and synced
(:func:`append_synced`), its reader skipping a last line cut short.

Fault injection, for the tests: LLAMP_FAULT_PLAN, read when this module is
imported (or :func:`set_fault_plan`), holds comma-separated items; unset, the
helpers only count their calls.

* ``STAGE@N``: at the Nth write of this process (every helper call counts,
  from 1), with STAGE one of ``kill-halfway`` (the temporary file cut to half
  its bytes, then SIGKILL: what a kill in the middle of the write leaves),
  ``kill-before-rename``, ``kill-after-rename`` (before the folder's fsync),
  ``enospc`` (half the file written, then the error of a full disk) or
  ``erofs`` (the error of a read-only folder, before anything is written).
  For a folder, ``kill-halfway`` is ``kill-before-rename``.
* ``in-place``: :func:`write_atomic` writes the target itself, no temporary
  file and no rename (the bypass with which the tests show that their checks
  see half-written files).
* ``log=PATH``: ``begin N TARGET`` and ``end N`` lines appended to PATH around
  each write (where a kill landed).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError

PLAN_VARIABLE = "LLAMP_FAULT_PLAN"
STAGES = ("kill-halfway", "kill-before-rename", "kill-after-rename", "enospc", "erofs")
# What a write fails with when the disk is full or the folder cannot be written: the user must act.
UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass
class FaultPlan:
    faults: dict[int, str] = field(default_factory=dict)  # write number -> stage
    in_place: bool = False
    log: str | None = None


def parse_fault_plan(text: str) -> FaultPlan:
    plan = FaultPlan()
    for item in filter(None, (part.strip() for part in text.split(","))):
        stage, _, number = item.partition("@")
        if item == "in-place":
            plan.in_place = True
        elif item.startswith("log="):
            plan.log = item[len("log="):]
        elif stage in STAGES and number.isdigit():
            plan.faults[int(number)] = stage
        else:
            raise ValueError(f"{PLAN_VARIABLE}: unknown item {item!r} (expected in-place, log=PATH or "
                             f"STAGE@N with STAGE one of {', '.join(STAGES)})")
    return plan


_plan = parse_fault_plan(os.environ.get(PLAN_VARIABLE, ""))
_writes = 0  # writes begun by this process


def set_fault_plan(text: str) -> None:
    """Replace the plan (``""``: none) and count writes from 1 again."""
    global _plan, _writes
    _plan, _writes = parse_fault_plan(text), 0


def _begin(path: str) -> tuple[int, str | None]:
    """This write's number and the fault planned for it."""
    global _writes
    _writes += 1
    _log(f"begin {_writes} {path}")
    return _writes, _plan.faults.get(_writes)


def _log(line: str) -> None:
    if _plan.log:
        fd = os.open(_plan.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _cut_half(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
        os.fsync(f.fileno())


def _strike(fault: str | None, path: str, is_folder: bool = False) -> None:
    """Carry out ``fault`` on the complete, not yet renamed file (or folder) ``path``."""
    if fault in ("kill-halfway", "enospc") and not is_folder:
        _cut_half(path)
    if fault == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if fault in ("kill-halfway", "kill-before-rename"):
        _kill()


def unwritable_error(path: str, error: BaseException) -> ConfigError | None:
    """The one-line error for a write of ``path`` that failed for lack of space or of write access (in
    ``error`` or what it was raised from, as torch and safetensors wrap it); None for any other failure."""
    code = _errno(error)
    if code is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    fix = ("free space on its disk" if code in (errno.ENOSPC, errno.EDQUOT)
           else f"make {folder} writable (or write elsewhere)")
    return ConfigError(f"cannot write {path}: {os.strerror(code)}; {fix}, then run the same command again")


def _errno(error: BaseException) -> int | None:
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in UNWRITABLE:
            return error.errno
        match = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(error))  # safetensors' Rust I/O errors
        if match and int(match[1] or match[2]) in UNWRITABLE:
            return int(match[1] or match[2])
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _fsync(path: str) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    is_folder = os.path.isdir(path)
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_folder else 0))
    except OSError:
        if is_folder:
            return  # e.g. Windows, where a folder cannot be opened: its entries are synced with its files
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(folder: str) -> None:
    """Flush every file under ``folder`` to disk: one sync(2) where there is one (an fsync per file costs
    seconds for the 1,728 images of a drawn dataset), else an fsync each."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for here, _, files in os.walk(folder):
        for name in files:
            _fsync(os.path.join(here, name))
        _fsync(here)


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` (see the module's text)."""
    folder = os.path.dirname(os.path.abspath(path))
    number, fault = _begin(path)
    try:
        os.makedirs(folder, exist_ok=True)
        if fault == "erofs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), folder)
        if _plan.in_place:
            write(path)
            _strike(fault, path)
            if fault == "kill-after-rename":
                _kill()
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            os.close(fd)
            try:
                write(tmp)
                _fsync(tmp)
                _strike(fault, tmp)
                os.chmod(tmp, 0o644)  # mkstemp makes it private; data, caches and checkpoints are shared
                os.replace(tmp, path)
                if fault == "kill-after-rename":
                    _kill()
                _fsync(folder)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    except Exception as e:
        error = unwritable_error(path, e)
        if error is None:
            raise
        raise error from None
    _log(f"end {number}")


def write_text_atomic(path: str, text: str) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, dump)


def write_json_atomic(path: str, obj: Any, indent: int | None = 1) -> None:
    """``obj`` as JSON (one trailing newline)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def append_synced(path: str, text: str) -> None:
    """Append ``text`` to ``path`` and fsync it: for a journal whose reader skips a last line cut short
    (rewriting the whole file at each append would cost its size every time)."""
    number, fault = _begin(path)
    data = text.encode("utf-8")
    try:
        if fault == "erofs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        with open(path, "ab") as f:
            if fault in ("kill-halfway", "enospc"):
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                if fault == "enospc":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
                _kill()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if fault in ("kill-before-rename", "kill-after-rename"):
            _kill()
    except Exception as e:
        error = unwritable_error(path, e)
        if error is None:
            raise
        raise error from None
    _log(f"end {number}")


def write_folder_atomic(folder: str, write: Callable[[str], Any], replace: bool = True) -> str:
    """``write(tmp)`` fills a temporary folder beside ``folder``, whose files are then synced and which
    is renamed to ``folder``. An existing ``folder`` is replaced (moved aside first, then deleted) if
    ``replace``; otherwise the rename fails with OSError."""
    parent = os.path.dirname(os.path.abspath(folder))
    number, fault = _begin(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        if fault == "erofs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), parent)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", suffix=".tmp", dir=parent)
        old = None
        try:
            write(tmp)
            _sync_tree(tmp)
            _strike(fault, tmp, is_folder=True)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            if replace and os.path.isdir(folder):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", suffix=".old", dir=parent)
                os.replace(folder, old)  # onto the empty folder just made: no other name is ever taken
            os.replace(tmp, folder)
            if fault == "kill-after-rename":
                _kill()
            _fsync(parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except Exception as e:
        error = unwritable_error(folder, e)
        if error is None:
            raise
        raise error from None
    _log(f"end {number}")
    return folder
