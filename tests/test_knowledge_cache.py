"""The knowledge-cache file format: writer, validating loader, lookup by class name.

Caches here are written directly with ``CacheWriter`` from random tensors (no
LLM run), so each check sees exactly what was stored; the LLM identity is the
tiny Llama's. ``tests/test_llm_prompts.py`` checks real builds.
"""
import json
import os

import pytest
import torch

from llamp.errors import ConfigError, MissingFileError
from llamp.knowledge_cache.files import METADATA_FILE, cache_size_bytes, kv_file_name
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.knowledge_cache.writer import CacheWriter
from llamp.llm.identity import config_sha256, llm_identity

CLASSNAMES = ["red circle", "green square", "blue triangle", "red cross", "green circle"]
LENGTHS = [[5, 9, 7, 3, 9], [4, 4, 6, 2, 5], [8, 1, 8, 8, 2]]  # real tokens per template and class
KV_HEADS, HEAD_DIM, EMBED = 2, 16, 48


def write_cache(folder, llm, layers=(0, 1), finish=True, templates=3, seed=0, tag="INPUTS"):
    """A cache of random keys/values (left-padded, lengths LENGTHS); returns what was written."""
    gen = torch.Generator().manual_seed(seed)
    writer = CacheWriter(str(folder), {
        "dataset": "Synthetic", "classnames": CLASSNAMES,
        "query_templates": [f"question {t} about a {{}}." for t in range(templates)],
        "llm": llm_identity(llm), "kept_layers": list(layers), "dtype": "float32",
        "build_command": "python -m llm_prompts build --example",
    })
    written = {}
    for t in range(templates):
        seq = max(LENGTHS[t])
        mask = torch.tensor([[0] * (seq - n) + [1] * n for n in LENGTHS[t]])
        kv = {layer: tuple(torch.randn(len(CLASSNAMES), KV_HEADS, seq, HEAD_DIM, generator=gen) for _ in range(2))
              for layer in layers}
        writer.write_template(t, kv, mask, input_sha256=f"{tag}-{t}")
        written[t] = (kv, mask)
    targets = torch.randn(len(CLASSNAMES), EMBED, generator=gen)
    if finish:
        writer.write_targets(targets, "targets-inputs", clip={"source": "tiny"})
        writer.finish()
    return written, torch.nn.functional.normalize(targets, dim=-1)


@pytest.fixture
def llm(tiny_models):
    return tiny_models["llm"]


@pytest.fixture
def cache_dir(tmp_path, llm):
    folder = tmp_path / "cache"
    written, targets = write_cache(folder, llm)
    return folder, written, targets


def other_llm(tmp_path, name, **changes):
    """A config.json of another tiny Llama (only the config matters for identity)."""
    from transformers import LlamaConfig

    from llamp.tiny.llms import DEMO_FAMILY, FAMILIES

    folder = tmp_path / name
    LlamaConfig(vocab_size=538, **{**FAMILIES[DEMO_FAMILY].config, **changes}).save_pretrained(folder)
    return str(folder)


def test_kv_rows_follow_the_requested_names(cache_dir):
    folder, written, _ = cache_dir
    cache = KnowledgeCache.open(str(folder))
    names = ["red cross", "red circle", "blue triangle", "red cross"]  # any order, repeats allowed
    rows = cache.select(names)
    assert rows.tolist() == [3, 0, 2, 3]
    for t in range(cache.num_templates):
        got = cache.kv(t, rows)
        keys, values = got.keys[-1], got.values[-1]
        stored_keys, stored_values = written[t][0][1]
        mask = written[t][1]
        start = mask.shape[1] - max(LENGTHS[t][i] for i in rows.tolist())  # trimmed: all-padding columns
        assert torch.equal(got.mask, mask[rows, start:])
        real = got.mask.bool()[:, None, :, None]
        assert torch.equal(keys * real, stored_keys[rows, :, start:] * real)
        assert torch.equal(values * real, stored_values[rows, :, start:] * real)
        assert torch.all(keys[~got.mask.bool()[:, None, :, None].expand_as(keys)] == 0)  # padding stored as zeros
        assert got.lengths.tolist() == [LENGTHS[t][i] for i in rows.tolist()]
        assert got.positions[0, -1] == LENGTHS[t][3] - 1
    full = cache.kv(0, rows, trim=False)
    assert full.mask.shape[1] == max(LENGTHS[0])


def test_num_layers_serves_the_last_layers_only(cache_dir):
    folder, written, _ = cache_dir
    cache = KnowledgeCache.open(str(folder), num_layers=1)
    got = cache.kv(1, [0, 1], trim=False)
    assert got.layer_indices == [1] and len(got.keys) == len(got.values) == 1
    real = got.mask[:, None, :, None]
    assert torch.equal(got.keys[0] * real, written[1][0][1][0][:2] * real)
    assert len(KnowledgeCache.open(str(folder)).kv(1, [0]).keys) == 2
    with pytest.raises(ConfigError, match="--num-layers 3"):
        KnowledgeCache.open(str(folder), num_layers=3)


def test_kv_device_dtype_and_targets(cache_dir):
    folder, _, targets = cache_dir
    cache = KnowledgeCache.open(str(folder))
    got = cache.kv(2, cache.select(["green circle"]), device="cpu", dtype=torch.bfloat16)
    assert got.keys[0].dtype == torch.bfloat16 and got.mask.dtype == torch.long
    assert got.mask.shape == (1, LENGTHS[2][4])  # trimmed to the class's own length
    assert torch.allclose(cache.targets(cache.select(["blue triangle", "red circle"])), targets[[2, 0]])
    assert torch.allclose(cache.targets(), targets)
    assert cache.embed_dim == EMBED and cache.num_classes == 5 and cache.num_templates == 3


def test_wrong_class_list_names_the_missing_classes(cache_dir):
    folder, _, _ = cache_dir
    cache = KnowledgeCache.open(str(folder))
    with pytest.raises(ConfigError, match="purple hexagon") as err:
        cache.select(["red circle", "purple hexagon", "yellow star"])
    assert "2 of 3 class names" in str(err.value) and str(folder) in str(err.value)


def test_the_same_llm_passes_from_its_folder_or_config_file(cache_dir, llm):
    folder, _, _ = cache_dir
    for source in (llm, os.path.join(llm, "config.json")):
        KnowledgeCache.open(str(folder), expected_llm=llm_identity(source))


@pytest.mark.parametrize("change, field", [({"hidden_size": 32}, "hidden_size"),
                                           ({"num_hidden_layers": 3}, "num_hidden_layers"),
                                           ({"num_key_value_heads": 4}, "num_key_value_heads"),
                                           ({"rms_norm_eps": 1e-6}, "config.json differs")])
def test_a_different_llm_is_refused(cache_dir, tmp_path, change, field):
    folder, _, _ = cache_dir
    other = other_llm(tmp_path, "other", **change)
    with pytest.raises(ConfigError, match=field) as err:
        KnowledgeCache.open(str(folder), expected_llm=llm_identity(other))
    assert "another LLM" in str(err.value)


def test_config_hash_ignores_how_the_file_was_saved(llm):
    with open(os.path.join(llm, "config.json")) as f:
        raw = json.load(f)
    resaved = {**raw, "transformers_version": "9.9.9", "dtype": "bfloat16"}
    assert config_sha256(resaved) == config_sha256(raw)
    assert config_sha256({**raw, "hidden_size": 65}) != config_sha256(raw)


def test_missing_folder_or_metadata_says_how_to_build(tmp_path, cache_dir):
    with pytest.raises(MissingFileError, match="python -m llm_prompts build"):
        KnowledgeCache.open(str(tmp_path / "nowhere"))
    folder, _, _ = cache_dir
    os.remove(folder / METADATA_FILE)
    with pytest.raises(MissingFileError, match=r"metadata\.json not found: build it with my command"):
        KnowledgeCache.open(str(folder), build_hint="my command")


def test_truncated_file_is_named(cache_dir):
    folder, _, _ = cache_dir
    path = folder / kv_file_name(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"kv_t01\.safetensors is truncated or corrupt"):
        KnowledgeCache.open(str(folder))


def test_corrupt_header_is_named(cache_dir):
    folder, _, _ = cache_dir
    path = folder / kv_file_name(2)
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32  # same size, header no longer JSON
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"kv_t02\.safetensors is truncated or corrupt"):
        KnowledgeCache.open(str(folder))


def test_missing_kv_file_is_named(cache_dir):
    folder, _, _ = cache_dir
    os.remove(folder / kv_file_name(0))
    with pytest.raises(MissingFileError, match=r"kv_t00\.safetensors is missing"):
        KnowledgeCache.open(str(folder))


def test_file_from_another_build_is_refused(tmp_path, llm, cache_dir):
    folder, _, _ = cache_dir
    write_cache(tmp_path / "second", llm, seed=1, tag="OTHERS")  # same shapes and file sizes
    os.replace(tmp_path / "second" / kv_file_name(1), folder / kv_file_name(1))
    with pytest.raises(ConfigError, match=r"kv_t01\.safetensors does not belong to this metadata"):
        KnowledgeCache.open(str(folder))


def test_verify_detects_changed_tensor_data(cache_dir):
    folder, _, _ = cache_dir
    KnowledgeCache.open(str(folder)).verify()
    path = folder / kv_file_name(0)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside tensor data: the header still reads fine
    path.write_bytes(bytes(data))
    cache = KnowledgeCache.open(str(folder))
    with pytest.raises(ConfigError, match=r"kv_t00\.safetensors is corrupt"):
        cache.verify()


def test_incomplete_build_is_refused_but_inspectable(tmp_path, llm):
    folder = tmp_path / "partial"
    write_cache(folder, llm, finish=False)
    with pytest.raises(ConfigError, match="incomplete build.*no distillation targets.*--example"):
        KnowledgeCache.open(str(folder))
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta["templates"] = meta["templates"][:1]
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="1 of 3 query templates"):
        KnowledgeCache.open(str(folder))
    cache = KnowledgeCache.open(str(folder), allow_incomplete=True)
    assert cache.available_templates == [0]
    with pytest.raises(ConfigError, match="query template 2"):
        cache.kv(2, [0])


def test_unsupported_version_is_refused(cache_dir):
    folder, _, _ = cache_dir
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta["format_version"] = 99
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="format_version 99"):
        KnowledgeCache.open(str(folder))


def test_writer_lists_a_file_only_once_written_and_leaves_no_temp_files(tmp_path, llm):
    folder = tmp_path / "w"
    writer = CacheWriter(str(folder), {"dataset": "Synthetic", "classnames": CLASSNAMES, "query_templates": ["{}"],
                                       "llm": llm_identity(llm), "kept_layers": [1], "dtype": "float32"})
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["templates"] == [] and meta["complete"] is False
    mask = torch.ones(len(CLASSNAMES), 4, dtype=torch.long)
    kv = {1: (torch.zeros(5, KV_HEADS, 4, HEAD_DIM), torch.zeros(5, KV_HEADS, 4, HEAD_DIM))}
    assert not writer.template_done(0, "x")
    writer.write_template(0, kv, mask, "x")
    assert writer.template_done(0, "x") and not writer.template_done(0, "y")
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert [e["file"] for e in meta["templates"]] == [kv_file_name(0)]
    assert sorted(os.listdir(folder)) == [kv_file_name(0), METADATA_FILE]
    with pytest.raises(RuntimeError, match="targets"):
        writer.finish()


def test_writer_refuses_a_folder_of_another_llm(tmp_path, cache_dir):
    folder, _, _ = cache_dir
    other = other_llm(tmp_path, "other", hidden_size=32)
    with pytest.raises(ConfigError, match="another LLM.*hidden_size"):
        CacheWriter(str(folder), {"dataset": "Synthetic", "classnames": CLASSNAMES, "query_templates": ["{}"],
                                  "llm": llm_identity(other), "kept_layers": [1], "dtype": "float32"})


def test_size_formula_matches_the_files(cache_dir):
    folder, _, _ = cache_dir
    cache = KnowledgeCache.open(str(folder))
    kv_bytes = sum(cache.template_info(t)["bytes"] for t in range(cache.num_templates))
    formula = sum(cache_size_bytes(5, 1, max(LENGTHS[t]), 2, KV_HEADS, HEAD_DIM, 4) for t in range(3))
    assert formula <= kv_bytes < formula * 1.05  # the rest: masks and headers


def test_rows_with_a_gap_keep_every_token(tmp_path, llm):
    """The release layout's rows, [pad][prompt][pad][BOS noun phrases]: trimming must not cut into a row."""
    masks = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 1, 1],
                          [0, 1, 1, 1, 1, 1, 0, 0, 1],
                          [0, 0, 0, 1, 1, 0, 1, 1, 1]])
    gen = torch.Generator().manual_seed(3)
    kv = {1: tuple(torch.randn(3, KV_HEADS, masks.shape[1], HEAD_DIM, generator=gen) for _ in range(2))}
    writer = CacheWriter(str(tmp_path / "gaps"), {
        "dataset": "Synthetic", "classnames": CLASSNAMES[:3], "query_templates": ["{}"], "layout": "release",
        "llm": llm_identity(llm), "kept_layers": [1], "dtype": "float32"})
    writer.write_template(0, kv, masks, "gaps")
    writer.write_targets(torch.randn(3, EMBED, generator=gen), "targets")
    writer.finish()
    cache = KnowledgeCache.open(str(tmp_path / "gaps"))
    assert cache.layout == "release"
    for rows in ([0], [0, 2], [2], [1, 0]):
        got = cache.kv(0, rows)
        start = min(int(masks[r].nonzero()[0]) for r in rows)  # the first column any of them uses
        assert torch.equal(got.mask, masks[rows, start:])
        keep = got.mask[:, None, :, None]
        for got_t, written_t in zip((got.keys[0], got.values[0]), kv[1]):
            assert torch.equal(got_t * keep, written_t[rows][:, :, start:] * keep)
        assert got.lengths.tolist() == masks[rows].sum(-1).tolist()
    # Positions run on across the gap: row 0's tokens after the gap continue at 3, 4.
    assert cache.kv(0, [0]).positions[0].tolist() == [0, 1, 2, 2, 2, 3, 4]
    # A cache that does not record its layout was built before layouts existed: contiguous.
    meta = json.loads((tmp_path / "gaps" / METADATA_FILE).read_text())
    del meta["layout"]
    (tmp_path / "gaps" / METADATA_FILE).write_text(json.dumps(meta))
    assert KnowledgeCache.open(str(tmp_path / "gaps")).layout == "contiguous"


def test_writer_in_another_dtype_keeps_no_file_listed(cache_dir, llm):
    """Files stored in float32 cannot stay listed in a bfloat16 cache: each one is rewritten."""
    folder, _, _ = cache_dir
    header = {"dataset": "Synthetic", "classnames": CLASSNAMES,
              "query_templates": [f"question {t} about a {{}}." for t in range(3)],
              "llm": llm_identity(llm), "kept_layers": [0, 1], "dtype": "float32"}
    assert [e["index"] for e in CacheWriter(str(folder), header).meta["templates"]] == [0, 1, 2]
    writer = CacheWriter(str(folder), {**header, "dtype": "bfloat16"})
    assert writer.meta["templates"] == [] and not writer.template_done(0, "INPUTS-0")
    cache = KnowledgeCache.open(str(folder), allow_incomplete=True)  # readable (inspect) while the build runs
    assert cache.available_templates == [] and cache.dtype == torch.bfloat16


def test_targets_are_not_done_while_the_recorded_clip_differs(cache_dir, llm):
    """The reader refuses targets whose recorded CLIP digest is not the caller's: a rebuild must rewrite them."""
    folder, _, targets = cache_dir
    header = {"dataset": "Synthetic", "classnames": CLASSNAMES,
              "query_templates": [f"question {t} about a {{}}." for t in range(3)],
              "llm": llm_identity(llm), "kept_layers": [0, 1], "dtype": "float32"}
    writer = CacheWriter(str(folder), header)
    assert writer.targets_done("targets-inputs")  # no CLIP given: inputs and file alone
    assert not writer.targets_done("targets-inputs", "clip-a")  # recorded without a digest
    writer.write_targets(targets, "targets-inputs", clip={"source": "tiny", "text_sha256": "clip-a"})
    assert writer.targets_done("targets-inputs", "clip-a")
    assert not writer.targets_done("targets-inputs", "clip-b") and not writer.targets_done("other-inputs", "clip-a")
