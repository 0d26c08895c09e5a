"""The tiny CLIP's pre-training (llamp/tiny/pretraining.py) and how llamp.tiny.models writes it."""
import json
import os

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

import llamp.tiny.models as tiny
from llamp.clip.tokenizer import build_clip_tokenizer
from llamp.tiny.shapes import CLASSES
from llamp.tiny.pretraining import PretrainingRecipe, draw_batch, pretrain_clip

SHORT = PretrainingRecipe(steps=3, warmup_steps=1)


def fresh_clip():
    torch.manual_seed(0)
    return CLIPModel(CLIPConfig(**tiny.TINY_CLIP))


def test_a_batch_holds_every_class_once_with_its_words():
    pixels, captions = draw_batch(seed=0, step=5, image_size=224)
    assert pixels.shape == (len(CLASSES), 3, 224, 224)
    for (colour, shape), caption in zip(CLASSES, captions):
        assert colour in caption and shape in caption, caption
    again, _ = draw_batch(seed=0, step=5, image_size=224)
    other, _ = draw_batch(seed=0, step=6, image_size=224)
    assert torch.equal(pixels, again) and not torch.equal(pixels, other)


def test_pretraining_is_seeded_and_changes_both_towers():
    tokenizer = build_clip_tokenizer()
    initial = {k: v.clone() for k, v in fresh_clip().state_dict().items()}
    a, b = fresh_clip(), fresh_clip()
    record = pretrain_clip(a, tokenizer, SHORT)
    pretrain_clip(b, tokenizer, SHORT)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    for part in ("vision_model.encoder.layers.0.mlp.fc1.weight", "text_model.encoder.layers.0.mlp.fc1.weight"):
        assert not torch.equal(a.state_dict()[part], initial[part]), part
    assert record["recipe"]["steps"] == 3 and len(record["first_losses"]) == 3 and not a.training
    # the temperature a real CLIP ends with, held there: the baselines train through it
    assert a.logit_scale.exp().item() == pytest.approx(100.0) and record["logit_scale"] == pytest.approx(100.0)
    assert not torch.equal(initial["logit_scale"], a.state_dict()["logit_scale"])  # CLIP's init is 1/0.07


def test_the_writer_records_pretraining_and_replaces_the_other_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "pretrain_clip", lambda model, tok, **kw: pretrain_clip(model, tok, SHORT))
    out = str(tmp_path / "models")
    paths = tiny.write_tiny_models(out, pretrained=False)
    assert not tiny.is_pretrained(paths["clip"])
    random_weights = CLIPModel.from_pretrained(paths["clip"]).state_dict()
    tiny.write_tiny_models(out, pretrained=True)  # a random CLIP where a pre-trained one is asked: replaced
    with open(os.path.join(paths["clip"], tiny.PRETRAINING_RECORD)) as f:
        assert json.load(f)["recipe"]["steps"] == 3
    pretrained = CLIPModel.from_pretrained(paths["clip"]).state_dict()
    assert any(not torch.equal(pretrained[k], random_weights[k]) for k in random_weights)
