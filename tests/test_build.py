"""The cache build (llm_prompts/build.py) through ``python -m llm_prompts build`` on Synthetic with the
tiny models: a complete cache; a killed build resumes without redoing finished work; a hand edit of
descriptions.jsonl reaches the cache (and only where it should); what a rebuild keeps and what it
computes again (another noun-phrase method, --regenerate, one's own query templates, another dtype).
"""
import hashlib
import json
import os
import shutil

import pytest
import torch
from llm_prompts_cli import NUM_CLASSES, NUM_TEMPLATES, Counter, build_argv, check_against_forward, decoded

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, METADATA_FILE, kv_file_name
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.llm.identity import llm_identity
from llm_prompts import generation, kv
from llm_prompts.__main__ import main
from llm_prompts.descriptions import read_descriptions
from llm_prompts.queries import query_templates


def test_build_writes_a_complete_cache(built, tiny_models):
    from vl_datasets import SYNTHETIC_CLASSNAMES

    cache = KnowledgeCache.open(built, expected_llm=llm_identity(tiny_models["llm"]))
    assert cache.classnames == list(SYNTHETIC_CLASSNAMES)
    assert cache.num_templates == NUM_TEMPLATES and cache.query_templates == query_templates("Synthetic")
    assert cache.layer_indices == [1] and cache.dtype == torch.float32
    targets = cache.targets()
    assert targets.shape == (NUM_CLASSES, 48) and torch.allclose(targets.norm(dim=-1), torch.ones(NUM_CLASSES))
    records = list(read_descriptions(os.path.join(built, DESCRIPTIONS_FILE)).values())
    assert len(records) == NUM_CLASSES * NUM_TEMPLATES
    first = records[0]
    assert first["question"] == "In one sentence, " + first["template"].format(first["class"])
    assert first["answer_start"] == f"The {first['class']} appears as"
    assert isinstance(first["noun_phrases"], list) and first["noun_phrase_method"].startswith(("spacy:", "rules"))
    meta = json.loads(open(os.path.join(built, METADATA_FILE)).read())
    assert meta["complete"] and meta["llm"]["source"] == tiny_models["llm"]
    assert meta["generation"]["max_new_tokens"] == 16


def test_interrupted_build_resumes_without_redoing_finished_work(tmp_path, tiny_models, data_root, monkeypatch,
                                                                 tiny_llm):
    out = str(tmp_path / "cache")
    argv = build_argv(data_root, tiny_models, "--out", out, "--num-layers", "2", "--spacy-model", "none",
                      "--layout", "contiguous")
    # First run: killed while extracting the keys/values of template 1 (template 0 is done).
    monkeypatch.setattr(kv, "extract_kv", Counter(kv.extract_kv, fail_on=2))
    with pytest.raises(RuntimeError, match="build killed"):
        main(argv)
    with pytest.raises(ConfigError, match="incomplete build"):
        KnowledgeCache.open(out)
    finished = os.stat(os.path.join(out, kv_file_name(0)))

    generate = Counter(generation.generate_answers)
    extract = Counter(kv.extract_kv.fn)
    monkeypatch.setattr(generation, "generate_answers", generate)
    monkeypatch.setattr(kv, "extract_kv", extract)
    assert main(argv) == 0
    prompts = [p for args, _ in generate.calls for p in decoded(tiny_llm[1], args[2])]
    templates = query_templates("Synthetic")
    assert len(prompts) == NUM_CLASSES * (NUM_TEMPLATES - 2)  # templates 0 and 1 had their answers already
    assert not any(templates[t].format("red circle") in p for p in prompts for t in (0, 1))
    assert len(extract.calls) == NUM_TEMPLATES - 1  # template 0 was kept as it was
    again = os.stat(os.path.join(out, kv_file_name(0)))
    assert (again.st_ino, again.st_mtime_ns) == (finished.st_ino, finished.st_mtime_ns)

    cache = KnowledgeCache.open(out, num_layers=2)
    assert cache.layer_indices == [0, 1] and cache.layout == "contiguous"
    for c, t in [(0, 0), (4, 1), (9, 7)]:
        for layer in (0, 1):
            check_against_forward(cache, tiny_llm, c, t, layer)
    records = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE)).values()
    assert {r["noun_phrase_method"] for r in records} == {"rules"}

    generate.calls.clear(), extract.calls.clear()
    assert main(argv) == 0  # complete: nothing to redo
    assert generate.calls == [] and extract.calls == []


def test_edited_descriptions_reach_the_cache(built, tmp_path, tiny_models, data_root, monkeypatch, tiny_llm):
    out = str(tmp_path / "edited")
    shutil.copytree(built, out)
    before = KnowledgeCache.open(out)
    old_targets = before.targets()
    old_kv = {c: before.kv(2, [c], trim=True) for c in range(NUM_CLASSES)}
    edited_class, path = 2, os.path.join(out, DESCRIPTIONS_FILE)
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["class"] == before.classnames[edited_class] and record["template_index"] == 2:
            record["noun_phrases"] = ["a bright blue wedge", "three sharp corners"]
            lines[i] = json.dumps(record)
    # ... plus half a line, as a killed run leaves it
    open(path, "w").write("\n".join(lines) + "\n" + '{"dataset": "Synthetic", "cla')

    generate = Counter(generation.generate_answers)
    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(generation, "generate_answers", generate)
    monkeypatch.setattr(kv, "extract_kv", extract)
    assert main(build_argv(data_root, tiny_models, "--out", out)) == 0
    assert generate.calls == [] and len(extract.calls) == 1  # template 2 only

    after = KnowledgeCache.open(out)
    record = read_descriptions(path)[(after.classnames[edited_class], 2)]
    assert record["noun_phrases"] == ["a bright blue wedge", "three sharp corners"]
    check_against_forward(after, tiny_llm, edited_class, 2, layer=1)
    for c in range(NUM_CLASSES):
        # The release layout pads noun phrases to the template's longest: compare real tokens only.
        new, old = after.kv(2, [c], trim=True), old_kv[c]
        new_real, old_real = new.mask[0].bool(), old.mask[0].bool()
        if c == edited_class:
            changed = new_real.sum() != old_real.sum()
            assert changed or not torch.allclose(new.keys[0][0][:, new_real], old.keys[0][0][:, old_real])
        else:
            assert new_real.sum() == old_real.sum()
            for new_t, old_t in zip((new.keys[0], new.values[0]), (old.keys[0], old.values[0])):
                assert torch.allclose(new_t[0][:, new_real], old_t[0][:, old_real], atol=1e-5)
    for t in set(range(NUM_TEMPLATES)) - {2}:
        with open(os.path.join(out, kv_file_name(t)), "rb") as a, open(os.path.join(built, kv_file_name(t)), "rb") as b:
            assert a.read() == b.read()
    # The release's targets read query template 0's phrases only (an edit there: see the tests below).
    assert torch.equal(after.targets(), old_targets)


def test_answers_left_by_a_kill_inside_a_batch_come_from_that_batch(built, tmp_path, tiny_models, data_root,
                                                                    monkeypatch):
    """A kill can keep part of a batch of answers: the rest is generated with the whole batch (the rows and
    arithmetic of a build run through), so the answers are those a build run through gives."""
    out = str(tmp_path / "cut")
    shutil.copytree(built, out)
    path = os.path.join(out, DESCRIPTIONS_FILE)
    records = read_descriptions(path)
    classnames = KnowledgeCache.open(out).classnames
    with open(path, "w") as f:  # template 0's answers for classes 20..35 lost: 4 of the batch 16..31, all of 32..35
        f.writelines(json.dumps(r) + "\n" for (c, t), r in records.items() if t or classnames.index(c) < 20)
    generate = Counter(generation.generate_answers)
    monkeypatch.setattr(generation, "generate_answers", generate)
    assert main(build_argv(data_root, tiny_models, "--out", out)) == 0
    assert [args[2].input_ids.shape[0] for args, _ in generate.calls] == [16, 4]  # batch size 16
    assert read_descriptions(path) == records


def test_noun_phrases_of_another_method_are_kept_with_a_note(built, tmp_path, tiny_models, data_root, monkeypatch,
                                                              capsys):
    method = KnowledgeCache.open(built).metadata["noun_phrases"]
    if not method.startswith("spacy:"):
        pytest.skip("the cache was built without spaCy")
    out = str(tmp_path / "rules")
    shutil.copytree(built, out)
    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(kv, "extract_kv", extract)
    capsys.readouterr()
    assert main(build_argv(data_root, tiny_models, "--out", out, "--spacy-model", "none")) == 0
    assert extract.calls == []  # the stored phrases (and so the sequences) were kept
    note = f"note: {NUM_CLASSES * NUM_TEMPLATES} stored noun-phrase lists were not made by rules"
    assert note in capsys.readouterr().err


def test_regenerate_generates_every_answer_again(built, tmp_path, tiny_models, data_root, monkeypatch):
    out = str(tmp_path / "again")
    shutil.copytree(built, out)
    generate = Counter(generation.generate_answers)
    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(generation, "generate_answers", generate)
    monkeypatch.setattr(kv, "extract_kv", extract)
    assert main(build_argv(data_root, tiny_models, "--out", out, "--regenerate")) == 0
    assert sum(len(args[2]) for args, _ in generate.calls) == NUM_CLASSES * NUM_TEMPLATES
    # Greedy decoding gives the same answers, hence the same inputs: the keys/values are kept.
    assert extract.calls == []


def write_query_file(path, templates, system="You are a helpful assistant."):
    """A query-template file of one's own, with the published prefix (typo included)."""
    path.write_text(json.dumps({"_chat": {"system": system, "user_prefix": "In one sentece, ",
                                          "answer_start": "The {} appears as"},
                                "Synthetic": templates}, indent=1))


def test_own_query_templates_rebuild_only_what_they_change(tmp_path, tiny_models, data_root, monkeypatch, tiny_llm,
                                                           capsys):
    file = tmp_path / "published.json"
    templates = ["describe the look of a {}.", "what does a {} look like?", "list the visual features of a {}."]
    write_query_file(file, templates)
    out = str(tmp_path / "own")
    argv = build_argv(data_root, tiny_models, "--out", out, "--query-templates", str(file), "--spacy-model", "none")
    assert main(argv) == 0
    cache = KnowledgeCache.open(out)
    assert cache.query_templates == templates
    assert cache.metadata["query_template_file"] == {
        "file": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "builtin": False}
    record = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE))[("red circle", 1)]
    assert record["question"] == "In one sentece, what does a red circle look like?"
    check_against_forward(cache, tiny_llm, 0, 1, layer=1)
    assert main(["inspect", out]) == 0
    assert f"wording   {file} (--query-templates, sha256 " in capsys.readouterr().out
    stats = {t: os.stat(os.path.join(out, kv_file_name(t))) for t in range(3)}

    # One template reworded: only its answers and keys/values are computed again.
    templates[1] = "how would you recognise a {} at a glance?"
    write_query_file(file, templates)
    generate = Counter(generation.generate_answers)
    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(generation, "generate_answers", generate)
    monkeypatch.setattr(kv, "extract_kv", extract)
    assert main(argv) == 0
    prompts = [p for args, _ in generate.calls for p in decoded(tiny_llm[1], args[2])]
    assert len(prompts) == NUM_CLASSES and all("recognise a " in p and "at a glance?" in p for p in prompts)
    assert len(extract.calls) == 1
    for t in (0, 2):
        again = os.stat(os.path.join(out, kv_file_name(t)))
        assert (again.st_ino, again.st_mtime_ns) == (stats[t].st_ino, stats[t].st_mtime_ns)
    assert os.stat(os.path.join(out, kv_file_name(1))).st_mtime_ns != stats[1].st_mtime_ns
    cache = KnowledgeCache.open(out)
    assert cache.query_templates == templates
    assert cache.metadata["query_template_file"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    check_against_forward(cache, tiny_llm, 5, 1, layer=1)

    # The chat wording is in every question: everything is computed again.
    write_query_file(file, templates, system="You are an expert on shapes.")
    generate.calls.clear(), extract.calls.clear()
    assert main(argv) == 0
    assert sum(len(args[2]) for args, _ in generate.calls) == NUM_CLASSES * 3 and len(extract.calls) == 3


def test_build_dtype_is_what_the_llm_runs_in(tmp_path, tiny_models, data_root, monkeypatch):
    import llm_prompts.build as build

    file = tmp_path / "one.json"
    write_query_file(file, ["describe the look of a {}."])
    out = str(tmp_path / "bf16")
    loaded = []  # dtype of each LLM the build loaded

    def load_llm(*args, **kwargs):
        model = original(*args, **kwargs)
        loaded.append(next(model.parameters()).dtype)
        return model

    original = build.load_llm
    monkeypatch.setattr(build, "load_llm", load_llm)
    argv = build_argv(data_root, tiny_models, "--out", out, "--query-templates", str(file), "--spacy-model", "none",
                      "--dtype", "bf16")
    assert main(argv) == 0
    assert loaded == [torch.bfloat16]
    cache = KnowledgeCache.open(out)
    assert cache.dtype == torch.bfloat16 and cache.kv(0, [0]).keys[0].dtype == torch.bfloat16

    # Back to fp32 (the default): answers of a bf16 LLM are not reused, every file is rewritten.
    generate = Counter(generation.generate_answers)
    monkeypatch.setattr(generation, "generate_answers", generate)
    assert main(argv[:-2]) == 0
    assert loaded == [torch.bfloat16, torch.float32]
    assert sum(len(args[2]) for args, _ in generate.calls) == NUM_CLASSES
    cache = KnowledgeCache.open(out)
    assert cache.dtype == torch.float32 and cache.kv(0, [0]).keys[0].dtype == torch.float32
