"""Hand-written templates are configuration: TRAINER.<NAME>.TEMPLATES for zero-shot CLIP, KgCoOp and
PromptSRC, and ``--clip-templates`` for the knowledge cache's distillation targets; our wording stays
the default. Each test checks that the configured sentences are the ones that reach the model."""
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from train_cli import ZERO_SHOT_EVAL, accuracy, error_line, in_process_trainer, run_train, train_argv

from llamp.errors import ConfigError, MissingFileError
from llamp.templates import configured_templates, zero_shot_templates

# Shaped like a release's per-dataset file (one sentence per dataset, a generic fallback).
RELEASE_STYLE = {
    "_comment": "release-style wording, for the tests",
    "Synthetic": ["a photo of a {}, a type of shape."],
    "default": ["a photo of a {}."],
}
GENERIC = ["a bad photo of a {}.", "a sculpture of a {}.", "a rendering of a {}.", "itap of a {}."]
AS_CONFIGURED = dict(subset=None, epochs=None, print_freq=None)  # the trainers on every class (2 shots)


@pytest.fixture(scope="module")
def template_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("templates")
    per_dataset, generic = folder / "release_style.json", folder / "generic.json"
    per_dataset.write_text(json.dumps(RELEASE_STYLE))
    generic.write_text(json.dumps(GENERIC))
    return {"per_dataset": str(per_dataset), "generic": str(generic)}


# ---- the setting ------------------------------------------------------------
def test_an_empty_setting_is_our_wording_and_the_others_are_taken_as_given(template_files):
    key = "TRAINER.X.TEMPLATES"
    for empty in (None, "", []):
        assert configured_templates(empty, "OxfordPets", key).templates == zero_shot_templates("OxfordPets", True)
        assert configured_templates(empty, "OxfordPets", key).source == "built-in"
    assert configured_templates(None, "OxfordPets", key, ensemble=False).templates == \
        zero_shot_templates("OxfordPets")
    assert configured_templates(["a {} here.", "b {}."], "OxfordPets", key).templates == ["a {} here.", "b {}."]
    assert configured_templates(["a {} here.", "b {}."], "OxfordPets", key, ensemble=False).templates == \
        ["a {} here."]
    chosen = configured_templates(template_files["per_dataset"], "Synthetic", key)
    assert chosen.templates == RELEASE_STYLE["Synthetic"] and chosen.source == template_files["per_dataset"]
    assert len(chosen.sha256) == 64
    assert configured_templates(template_files["per_dataset"], "OxfordPets", key).templates == ["a photo of a {}."]
    assert configured_templates(template_files["generic"], "EuroSAT", key).templates == GENERIC


def test_bad_settings_are_one_line_errors_naming_the_key(tmp_path):
    key = "TRAINER.KGCOOP.TEMPLATES"
    with pytest.raises(MissingFileError, match=rf"{key} .*nowhere.json: no such file"):
        configured_templates(str(tmp_path / "nowhere.json"), "Synthetic", key)
    with pytest.raises(MissingFileError, match=r"given as a list"):  # one sentence where a list was meant
        configured_templates("a photo of a {}.", "Synthetic", key)
    with pytest.raises(ConfigError, match=rf"{key}: template 'a photo' must .* exactly one"):
        configured_templates(["a photo"], "Synthetic", key)
    with pytest.raises(ConfigError, match="exactly one"):
        configured_templates(["a {} and a {}"], "Synthetic", key)
    no_default = tmp_path / "pets_only.json"
    no_default.write_text(json.dumps({"OxfordPets": ["a photo of a {}, a type of pet."]}))
    with pytest.raises(ConfigError, match=r"pets_only.json has no entry for Synthetic and no 'default'"):
        configured_templates(str(no_default), "Synthetic", key)
    broken = tmp_path / "broken.json"
    broken.write_text('{"Synthetic": [')
    with pytest.raises(ConfigError, match=r"broken.json is not valid JSON"):
        configured_templates(str(broken), "Synthetic", key)
    for error in ConfigError, MissingFileError:
        try:
            configured_templates(str(tmp_path / "nowhere.json"), "Synthetic", key)
        except error as e:
            assert "\n" not in str(e)


# ---- the trainers -----------------------------------------------------------
def clip_sentence_features(clip, templates, classnames):
    """Renormalised mean over templates of normalised CLIP text features ``[C, embed]``."""
    per_template = [F.normalize(clip.encode_text([t.format(c) for c in classnames]).float(), dim=-1)
                    for t in templates]
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


@torch.no_grad()
def test_zero_shot_clip_uses_the_configured_templates(tiny_models, tiny_clip, data_root, tmp_path, template_files):
    ours = in_process_trainer("ZeroshotCLIP", data_root, tmp_path / "ours", tiny_models, **AS_CONFIGURED)
    classnames = list(ours.dm.dataset.classnames)
    assert ours.templates.templates == zero_shot_templates("Synthetic")
    assert torch.allclose(ours.text_features, clip_sentence_features(tiny_clip, zero_shot_templates("Synthetic"),
                                                                     classnames), atol=1e-5)
    theirs = in_process_trainer("ZeroshotCLIP", data_root, tmp_path / "theirs", tiny_models,
                                "TRAINER.ZEROSHOTCLIP.TEMPLATES", template_files["per_dataset"], **AS_CONFIGURED)
    expected = clip_sentence_features(tiny_clip, RELEASE_STYLE["Synthetic"], classnames)
    assert torch.allclose(theirs.text_features, expected, atol=1e-5)
    assert not torch.allclose(theirs.text_features, ours.text_features, atol=1e-3)
    ensemble = in_process_trainer("ZeroshotCLIP", data_root, tmp_path / "ensemble", tiny_models,
                                  "TRAINER.ZEROSHOTCLIP.TEMPLATES", template_files["generic"],
                                  "TRAINER.ZEROSHOTCLIP.ENSEMBLE", "True", **AS_CONFIGURED)
    assert torch.allclose(ensemble.text_features, clip_sentence_features(tiny_clip, GENERIC, classnames), atol=1e-5)


def test_kgcoop_and_promptsrc_use_the_configured_templates(tiny_models, data_root, tmp_path, template_files):
    listed = ["a sketch of a {}.", "a photo of the {}."]
    kgcoop = in_process_trainer("KgCoOp", data_root, tmp_path / "kg", tiny_models, "TRAINER.KGCOOP.TEMPLATES",
                                str(listed), "TRAINER.KGCOOP.ENSEMBLE", "True", **AS_CONFIGURED)
    assert kgcoop.model.templates == listed
    default = in_process_trainer("KgCoOp", data_root, tmp_path / "kg_default", tiny_models, **AS_CONFIGURED)
    assert default.model.templates == zero_shot_templates("Synthetic")
    assert not torch.allclose(kgcoop.model.handcrafted, default.model.handcrafted, atol=1e-3)

    promptsrc = in_process_trainer("PromptSRC", data_root, tmp_path / "src", tiny_models,
                                   "TRAINER.PROMPTSRC.TEMPLATES", template_files["generic"], **AS_CONFIGURED)
    assert promptsrc.model.templates == GENERIC  # every one of them, whatever the dataset
    default = in_process_trainer("PromptSRC", data_root, tmp_path / "src_default", tiny_models, **AS_CONFIGURED)
    assert default.model.templates == zero_shot_templates("Synthetic", ensemble=True)
    assert not torch.allclose(promptsrc.model.frozen_text_features, default.model.frozen_text_features, atol=1e-3)


def test_a_bad_templates_setting_stops_train_py_before_anything_is_loaded(tiny_models, data_root, tmp_path):
    proc = run_train(*train_argv("PromptSRC", data_root, tmp_path / "bad", tiny_models,
                                 "TRAINER.PROMPTSRC.TEMPLATES", str(tmp_path / "missing.json"), **AS_CONFIGURED),
                     check=False)
    line = error_line(proc)
    assert "TRAINER.PROMPTSRC.TEMPLATES" in line and "missing.json" in line
    assert "Loaded CLIP" not in proc.stdout


def test_zero_shot_run_with_release_style_templates_through_train_py(tiny_models, data_root, tmp_path,
                                                                     template_files):
    """The user's path: a templates file named on the command line; the log says what was used, and stays
    free of import warnings and of progress bars (the output is not a terminal)."""
    proc = run_train(*train_argv("ZeroshotCLIP", data_root, tmp_path, tiny_models,
                                 "TRAINER.ZEROSHOTCLIP.TEMPLATES", template_files["per_dataset"], **ZERO_SHOT_EVAL))
    assert f"Zero-shot prompts: 1 template(s) from {template_files['per_dataset']}" in proc.stdout
    assert "a photo of a {}, a type of shape." in proc.stdout
    assert accuracy(proc.stdout) is not None  # evaluated (learning is tests/test_learning.py's)
    output = proc.stdout + proc.stderr
    for noise in ("pkg_resources", "Warning", "Loading weights", "it/s]"):
        assert noise not in output, noise


# ---- the knowledge cache's distillation targets ----------------------------------------
def test_the_cache_targets_take_the_clip_templates_file(tiny_models, synthetic_cache, tmp_path, template_files):
    from llamp.knowledge_cache.reader import KnowledgeCache
    from llm_prompts.__main__ import main

    folder = tmp_path / "cache"
    shutil.copytree(synthetic_cache["cache"], folder)
    before = KnowledgeCache.open(str(folder)).targets()
    kv_files = {p: os.path.getmtime(folder / p) for p in os.listdir(folder) if p.startswith("kv_")}
    argv = ["build", "--root", synthetic_cache["root"], "--dataset-config-file", "configs/datasets/synthetic.yaml",
            "--llm", tiny_models["llm"], "--clip", tiny_models["clip"], "--spacy-model", "none", "--quiet",
            "--out", str(folder), "--clip-templates", template_files["per_dataset"]]
    assert main(argv) == 0
    cache = KnowledgeCache.open(str(folder))
    meta = cache.metadata["targets"]
    assert meta["clip_templates"] == RELEASE_STYLE["Synthetic"]
    assert meta["clip_template_source"]["source"] == template_files["per_dataset"]
    assert not torch.allclose(cache.targets(), before, atol=1e-3)  # the targets were made again ...
    assert {p: os.path.getmtime(folder / p) for p in kv_files} == kv_files  # ... and nothing else

    assert main([*argv[:-1], str(tmp_path / "nowhere.json")]) == 2
