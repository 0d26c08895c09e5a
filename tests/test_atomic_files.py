"""The write helper (llamp/atomic_files.py): temporary file synced, renamed, folder synced; a full or
read-only folder is one line naming the file, with the old file untouched; its fault plan."""
import errno
import os
import subprocess

import pytest

from llamp import atomic_files
from llamp.atomic_files import (append_synced, parse_fault_plan, set_fault_plan, write_atomic,
                                write_folder_atomic, write_text_atomic)
from llamp.errors import ConfigError


@pytest.fixture(autouse=True)
def no_plan():
    set_fault_plan("")
    yield
    set_fault_plan("")


def test_the_file_and_its_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or replace(a, b))
    target = tmp_path / "out.txt"
    write_text_atomic(str(target), "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["out.txt"]
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert os.path.basename(events[0][1]).startswith(".out.txt.") and events[0][1].endswith(".tmp")
    assert events[2][1] == str(tmp_path)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("plan, reason", [("enospc@2", errno.ENOSPC), ("erofs@2", errno.EROFS)])
def test_a_full_or_read_only_folder_is_one_line_and_the_old_file_stays(tmp_path, plan, reason):
    target = tmp_path / "state.json"
    write_text_atomic(str(target), "old\n")
    set_fault_plan(plan)
    write_text_atomic(str(tmp_path / "other"), "x")  # write 1 passes
    with pytest.raises(ConfigError) as raised:
        write_text_atomic(str(target), "new " * 1000)
    assert str(raised.value).startswith(f"cannot write {target}: {os.strerror(reason)}; ")
    assert "\n" not in str(raised.value)
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["other", "state.json"]


def test_errors_wrapped_by_a_library_are_recognised(tmp_path):
    def torch_like(tmp):  # torch.save and safetensors raise their own error, from or naming the OS error
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.raises(ConfigError, match="No space left on device"):
        write_atomic(str(tmp_path / "a"), torch_like)
    with pytest.raises(ConfigError, match="Read-only file system"):
        write_atomic(str(tmp_path / "b"), lambda tmp: (_ for _ in ()).throw(
            RuntimeError("Error while serializing: I/O error: Read-only file system (os error 30)")))
    with pytest.raises(ValueError, match="not about the disk"):  # any other failure is left as it is
        write_atomic(str(tmp_path / "c"), lambda tmp: (_ for _ in ()).throw(ValueError("not about the disk")))
    assert os.listdir(tmp_path) == []


def test_a_real_full_disk(tmp_path):
    """A 64 KiB tmpfs (where this test may mount one): the OS's own ENOSPC through torch.save."""
    import torch

    from trainers.checkpoint import load_checkpoint, save_checkpoint

    folder = tmp_path / "small"
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the fault plan's ENOSPC is tested above")
    try:
        save_checkpoint({"w": torch.zeros(10)}, str(folder), "model.pth.tar-1")
        with pytest.raises(ConfigError, match=f"cannot write {folder}/model.pth.tar-2: No space left on device"):
            save_checkpoint({"w": torch.randn(200, 100)}, str(folder), "model.pth.tar-2")
        assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1"]
        assert torch.equal(load_checkpoint(str(folder / "model.pth.tar-1"))["w"], torch.zeros(10))
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_append_and_folder_writes_are_counted_and_fail_alike(tmp_path):
    set_fault_plan("enospc@2,erofs@3")
    append_synced(str(tmp_path / "journal"), "one\n")
    with pytest.raises(ConfigError, match="No space left"):
        append_synced(str(tmp_path / "journal"), "two two\n")
    assert (tmp_path / "journal").read_text() == "one\ntwo " # the half a full disk took
    with pytest.raises(ConfigError, match=f"cannot write {tmp_path / 'folder'}: Read-only"):
        write_folder_atomic(str(tmp_path / "folder"), lambda tmp: open(os.path.join(tmp, "f"), "w").close())
    write_folder_atomic(str(tmp_path / "folder"), lambda tmp: open(os.path.join(tmp, "f"), "w").close())
    assert sorted(os.listdir(tmp_path)) == ["folder", "journal"] and os.listdir(tmp_path / "folder") == ["f"]


def test_fault_plan_items():
    plan = parse_fault_plan("kill-halfway@3, in-place,log=/x/y,erofs@1")
    assert plan.faults == {3: "kill-halfway", 1: "erofs"} and plan.in_place and plan.log == "/x/y"
    with pytest.raises(ValueError, match="unknown item 'kill@3'"):
        parse_fault_plan("kill@3")
    assert atomic_files.parse_fault_plan("") == atomic_files.FaultPlan()
