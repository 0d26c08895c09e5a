"""MaPLe and PromptSRC against their authors' releases (the references: release_reference.py)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from release_reference import (CLASSES, LABELS, compare, far, fresh_clip, images, move_off_init, prompt_parts,
                               ref_image, ref_text, scaled_cosines, stock_activations, template_features)
from transformers import CLIPConfig, CLIPModel

from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.baselines.promptsrc import PromptSRCConfig, PromptSRCPromptLearner

TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a plain background."]


@pytest.fixture(scope="module")
def clip3_path(tmp_path_factory):
    """The tiny CLIP's shape with 3 layers per tower (MaPLe at depth 3), random weights."""
    from llamp.clip.tokenizer import build_clip_tokenizer
    from llamp.tiny.models import TINY_CLIP

    config = copy.deepcopy(TINY_CLIP)
    config["text_config"]["num_hidden_layers"] = config["vision_config"]["num_hidden_layers"] = 3
    torch.manual_seed(3)
    folder = str(tmp_path_factory.mktemp("clip3"))
    CLIPModel(CLIPConfig(**config)).eval().save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    return folder


# ---- MaPLe ----------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_maple_equals_the_release(clip3_path, depth):
    """3-layer towers; vision prompt d = coupling d (text prompt d). Variant: the prompts entering the last
    prompted layer D-1 not replaced (they flow on); at D = 1 (prompts at layer 0 only) no vision prompts."""
    clip = fresh_clip(clip3_path)
    model = MaPLePromptLearner(clip.model, clip.tokenizer, CLASSES, MaPLeConfig(n_ctx=2, prompt_depth=depth))
    params = move_off_init(model)
    x = images()
    losses, logits = model.losses(x, LABELS)
    ours = {"text": model.text_features(), "image": model.image_features(x), "logits": logits, **losses}

    # "a photo of a {name}.": "a photo" learned, "of a" stays text
    ids, prefix, suffix, _ = prompt_parts(clip.model, clip.tokenizer, "a photo of a", 2)
    ctx = model.ctx.unsqueeze(0).expand(len(CLASSES), -1, -1)
    text_prompts = [model.ctx, *model.deep_ctx]  # each [2, 64]
    vision_prompts = [p @ m.weight.t() + m.bias for p, m in zip(text_prompts, model.couplings)]  # each [2, 96]
    scale = clip.model.logit_scale.exp()
    with stock_activations(clip.model):
        embeds = torch.cat([prefix, ctx, suffix], dim=1)
        text = ref_text(clip.model, embeds, ids, deep=text_prompts[1:])
        image = ref_image(clip.model, x, vision_prompts)
        short_text = ref_text(clip.model, embeds, ids, deep=text_prompts[1:-1]) if depth > 1 else text
        short_image = ref_image(clip.model, x, vision_prompts[:-1])
    ref_logits = scaled_cosines(scale, image, text)
    ref = {"text": text, "image": image, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, LABELS)}
    compare(ours, ref, params, ["ce"])
    far(logits, scaled_cosines(scale, short_image, short_text))


# ---- PromptSRC ------------------------------------------------------------------------------
def test_promptsrc_equals_the_release(clip3_path):
    """Independent text (depth 3) and vision (depth 2) prompts; CE, 25 L1(text, template mean of raw
    features), 10 L1(image, frozen image), KL(frozen || prompted) summed / (B C). Variant: the text target
    as CLIP's ensembling averages (mean of normalised features). (The KL's direction flipped moves the KL
    by only ~9e-4: the random tiny CLIP's logits are nearly uniform.)"""
    clip = fresh_clip(clip3_path)
    config = PromptSRCConfig(n_ctx_text=4, n_ctx_vision=2, prompt_depth_text=3, prompt_depth_vision=2)
    model = PromptSRCPromptLearner(clip.model, clip.tokenizer, CLASSES, TEMPLATES, config)
    params = move_off_init(model, std=0.5)  # far from frozen CLIP: every term clearly non-zero
    x = images()
    losses, logits = model.losses(x, LABELS)
    ours = {"text": model.text_features(), "image": model.image_features(x), "logits": logits, **losses}

    ids, prefix, suffix, _ = prompt_parts(clip.model, clip.tokenizer, "a photo of a", 4)
    ctx = model.ctx.unsqueeze(0).expand(len(CLASSES), -1, -1)
    scale = clip.model.logit_scale.exp()
    with stock_activations(clip.model):
        per_template = template_features(clip.model, clip.tokenizer, TEMPLATES)  # [T, C, E]
        fixed = F.normalize(per_template.mean(0), dim=-1)  # [C, E]: mean of raw, normalised
        text = ref_text(clip.model, torch.cat([prefix, ctx, suffix], dim=1), ids, deep=list(model.deep_text))
        image = ref_image(clip.model, x, list(model.visual_prompts))
        with torch.no_grad():
            zero_shot = F.normalize(ref_image(clip.model, x), dim=-1)
    ref_logits = scaled_cosines(scale, image, text)
    zero_shot_logits = scale * zero_shot @ fixed.t()

    def kl(student, teacher):  # KL(teacher || student), summed, per logit
        return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="sum",
                        log_target=True) / student.numel()

    ref = {"text": text, "image": image, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, LABELS),
           "text_l1": 25 * F.l1_loss(F.normalize(text, dim=-1), fixed),
           "image_l1": 10 * F.l1_loss(F.normalize(image, dim=-1), zero_shot),
           "kl": 1.0 * kl(ref_logits, zero_shot_logits)}
    assert all(ref[k] > 1e-3 for k in losses)
    compare(ours, ref, params, list(losses))
    of_normalised = F.normalize(F.normalize(per_template, dim=-1).mean(0), dim=-1)
    far(losses["text_l1"], 25 * F.l1_loss(F.normalize(text, dim=-1), of_normalised))
