"""Rows read by positioned reads equal safetensors' own loading, and leave no file pages in the process."""
import mmap
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks.rss import read_status
from llamp.errors import ConfigError
from llamp.knowledge_cache.safetensors_files import TensorFileReader, read_safetensors_header


def reader_for(path):
    return TensorFileReader(str(path), read_safetensors_header(str(path)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_in_any_order_trimmed_or_whole_equal_safetensors_loading(tmp_path, dtype):
    gen = torch.Generator().manual_seed(0)
    tensors = {"keys": torch.randn(7, 3, 10, 4, generator=gen).to(dtype),
               "mask": torch.randint(0, 2, (7, 10), generator=gen).to(torch.int8),
               "targets": torch.randn(7, 5, generator=gen)}
    save_file(tensors, tmp_path / "t.safetensors")
    stored = load_file(tmp_path / "t.safetensors")
    reader = reader_for(tmp_path / "t.safetensors")
    rows = torch.tensor([4, 5, 6, 0, 0, 2, 3])  # runs, repeats and jumps
    for start in (None, 0, 3, 9):
        got = reader.read("keys", rows, start)
        assert got.dtype == dtype and torch.equal(got, stored["keys"][rows][:, :, start or 0:])
    assert torch.equal(reader.read("mask"), stored["mask"]) and torch.equal(reader.read("targets"), stored["targets"])
    assert reader.read("keys", torch.tensor([], dtype=torch.long)).shape == (0, 3, 10, 4)
    copy = pickle.loads(pickle.dumps(reader))  # its own descriptor: closing one leaves the other readable
    reader.close()
    assert torch.equal(copy.read("keys", rows[:2], 3), stored["keys"][rows[:2]][:, :, 3:])


def test_a_file_cut_short_after_opening_is_named(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"keys": torch.randn(4, 2, 8, 4)}, path)
    reader = reader_for(path)
    os.truncate(path, os.path.getsize(path) - 100)
    with pytest.raises(ConfigError, match="t.safetensors is truncated or corrupt"):
        reader.read("keys", torch.tensor([3]), 2)


def test_reading_every_row_leaves_no_file_pages_in_the_process(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"keys": torch.randn(64, 32, 64, 64)}, path)
    size = 64 * 32 * 64 * 64 * 4  # 32 MiB

    def file_pages_added(read):
        before = read_status()["RssFile"]
        kept = read()
        added = read_status()["RssFile"] - before
        del kept
        return added

    reader = reader_for(path)
    added = file_pages_added(lambda: [reader.read("keys", torch.arange(64), s) for s in (None, 1)])
    assert added < size // 8
    # the check can fail: the same bytes read through a memory map stay resident as file pages
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert file_pages_added(lambda: mapped[:]) > size // 2


def test_writer_gives_safetensors_bytes_with_the_metadata_in_one_order(tmp_path):
    """save_file's layout, byte for byte (one metadata key: one order), and the same bytes from every
    process (save_file orders several keys by a hash seeded per process)."""
    import subprocess
    import sys

    from llamp.knowledge_cache.safetensors_files import write_safetensors

    gen = torch.Generator().manual_seed(0)
    tensors = {"z": torch.randn(3, 4, generator=gen), "a": torch.randn(5, generator=gen).to(torch.bfloat16),
               "mask": torch.ones(2, 7, dtype=torch.int8), "h": torch.randn(2, 2, generator=gen).half(),
               "scalar": torch.tensor(3.0)}
    save_file(tensors, tmp_path / "library", metadata={"format": "x"})
    write_safetensors(str(tmp_path / "ours"), tensors, {"format": "x"})
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "library").read_bytes()
    write_safetensors(str(tmp_path / "one"), {"t": torch.arange(4.0)}, dict(b="1", a="2", c="3", d="4"))
    code = ("import sys, torch; from llamp.knowledge_cache.safetensors_files import write_safetensors; "
            "write_safetensors(sys.argv[1], {'t': torch.arange(4.0)}, dict(b='1', a='2', c='3', d='4'))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "two")], check=True,
                   env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    assert load_file(tmp_path / "one")["t"].tolist() == [0.0, 1.0, 2.0, 3.0]
