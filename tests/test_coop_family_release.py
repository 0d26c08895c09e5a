"""CoOp, CoCoOp and KgCoOp against their authors' release (the references: release_reference.py)."""
import pytest
import torch
import torch.nn.functional as F
from release_reference import (CLASSES, LABELS, compare, far, fresh_clip, images, move_off_init, prompt_parts,
                               ref_image, ref_text, scaled_cosines, stock_activations, template_features)

from llamp.baselines.cocoop import CoCoOp, CoCoOpConfig
from llamp.baselines.coop import CoOp, CoOpConfig
from llamp.baselines.kgcoop import KgCoOp, KgCoOpConfig


# ---- CoOp -----------------------------------------------------------------------------------
def coop_layout(prefix, ctx, suffix, lengths, position):
    """CoOp's prompt ``[C, 77, W]``: <SOT>, then the context ``ctx [C, n, W]`` and the name in the order
    CLASS_TOKEN_POSITION says, then "." <EOT> and padding (the suffix minus the name)."""
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    half, rows = ctx.shape[1] // 2, []
    for c, k in enumerate(lengths):
        name, rest = suffix[c:c + 1, :k], suffix[c:c + 1, k:]
        if position == "middle":
            parts = [prefix[c:c + 1], ctx[c:c + 1, :half], name, ctx[c:c + 1, half:], rest]
        else:  # front
            parts = [prefix[c:c + 1], name, ctx[c:c + 1], rest]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows)


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("position,other", [("end", "front"), ("middle", "end"), ("front", "middle")])
def test_coop_equals_the_release(tiny_models, position, other, class_specific):
    """Variant: the class token at ``other`` instead of CLASS_TOKEN_POSITION."""
    clip = fresh_clip(tiny_models["clip"])
    model = CoOp(clip.model, clip.tokenizer, CLASSES,
                 CoOpConfig(n_ctx=4, class_specific=class_specific, class_token_position=position))
    params = move_off_init(model)
    x = images()
    losses, logits = model.losses(x, LABELS)
    ours = {"text": model.text_features(), "logits": logits, "ce": losses["ce"]}

    ids, prefix, suffix, lengths = prompt_parts(clip.model, clip.tokenizer, "X X X X", 4)
    ctx = model.prompts.context
    ctx = ctx if class_specific else ctx.unsqueeze(0).expand(len(CLASSES), -1, -1)  # [C, n, W]
    scale = clip.model.logit_scale.exp()
    with stock_activations(clip.model):
        image = ref_image(clip.model, x)
        text = ref_text(clip.model, coop_layout(prefix, ctx, suffix, lengths, position), ids)
        moved = ref_text(clip.model, coop_layout(prefix, ctx, suffix, lengths, other), ids)
    ref_logits = scaled_cosines(scale, image, text)
    ref = {"text": text, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, LABELS)}
    compare(ours, ref, params, ["ce"])
    far(logits, scaled_cosines(scale, image, moved))


# ---- CoCoOp ---------------------------------------------------------------------------------
def test_cocoop_equals_the_release(tiny_models):
    """Variant: the meta-net's output not added to the context (plain CoOp)."""
    clip = fresh_clip(tiny_models["clip"])
    model = CoCoOp(clip.model, clip.tokenizer, CLASSES, CoCoOpConfig(ctx_init="a photo of a"))
    params = move_off_init(model)
    x = images()
    losses, logits = model.losses(x, LABELS)
    ours = {"text": model.image_text_features(F.normalize(model.image_features(x), dim=-1)), "logits": logits,
            **losses}

    ids, prefix, suffix, _ = prompt_parts(clip.model, clip.tokenizer, "a photo of a", 4)
    net, scale, n_cls = model.meta_net, clip.model.logit_scale.exp(), len(CLASSES)
    with stock_activations(clip.model):
        image = F.normalize(ref_image(clip.model, x), dim=-1)  # [B, E]
        hidden = F.relu(image @ net.linear1.weight.t() + net.linear1.bias)  # [B, E // 16]
        bias = hidden @ net.linear2.weight.t() + net.linear2.bias  # [B, W]: one shift per image

        def per_image(shift):  # [B, C, E]: each image's class prompts, its shift on every context token
            ctx = model.prompts.context.unsqueeze(0) + shift[:, None]  # [B, n, W]
            return torch.stack([F.normalize(ref_text(clip.model, torch.cat(
                [prefix, c.unsqueeze(0).expand(n_cls, -1, -1), suffix], dim=1), ids), dim=-1) for c in ctx])

        text, unshifted = per_image(bias), per_image(torch.zeros_like(bias))
    ref_logits = scale * torch.einsum("be,bce->bc", image, text)
    ref = {"text": text, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, LABELS)}
    compare(ours, ref, params, ["ce"])
    far(logits, scale * torch.einsum("be,bce->bc", image, unshifted))


# ---- KgCoOp ---------------------------------------------------------------------------------
def test_kgcoop_equals_the_release(tiny_models):
    """The release: CE + W (1 - mean cos(learned, hand-crafted)), W = 8; ours: 4 * mean ||a - b||^2.
    Variant: our weight 4 read as the release's W (4 (1 - cos))."""
    clip = fresh_clip(tiny_models["clip"])
    template = "a picture of a {}."
    model = KgCoOp(clip.model, clip.tokenizer, CLASSES, KgCoOpConfig(ctx_init="a photo of a"), [template])
    params = move_off_init(model)
    x = images()
    losses, logits = model.losses(x, LABELS)
    ours = {"text": model.text_features(), "handcrafted": model.handcrafted, "logits": logits, **losses}

    ids, prefix, suffix, _ = prompt_parts(clip.model, clip.tokenizer, "a photo of a", 4)
    ctx = model.prompts.context.unsqueeze(0).expand(len(CLASSES), -1, -1)
    scale = clip.model.logit_scale.exp()
    with stock_activations(clip.model):
        handcrafted = F.normalize(template_features(clip.model, clip.tokenizer, [template])[0], dim=-1)
        image = ref_image(clip.model, x)
        text = ref_text(clip.model, torch.cat([prefix, ctx, suffix], dim=1), ids)
    ref_logits = scaled_cosines(scale, image, text)
    score = 1.0 - F.cosine_similarity(F.normalize(text, dim=-1), handcrafted, dim=1, eps=1e-7).mean()
    ref = {"text": text, "handcrafted": handcrafted, "logits": ref_logits,
           "ce": F.cross_entropy(ref_logits, LABELS), "kg": 8.0 * score}
    compare(ours, ref, params, ["ce", "kg"])
    far(losses["kg"], 4.0 * score)
