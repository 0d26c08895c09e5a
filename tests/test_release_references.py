"""Each method's computation against its authors' release, rebuilt by hand from CLIP's own modules.

The references are written the way the releases compute (CoOp, CoCoOp: KaiyangZhou/CoOp; KgCoOp:
htyao89/KgCoOp; MaPLe: muzairkhattak/multimodal-prompt-learning; PromptSRC: muzairkhattak/PromptSRC;
LLaMP: zhaohengz/LLaMP): the prompt is the embeddings of <SOT>, the context and the rest of
"{words} {name}." concatenated, every position's embedding added; causal text layers, deep prompts
replacing their tokens between layers; features read at <EOT> = argmax of the token ids
(``clip.tokenize`` pads with zeros). Only CLIP's Hugging Face modules, with CLIP's own activation
(ours swaps in a leaner backward). fp32: the releases' fp16 casts are not part of the computation.

Every learned tensor is moved off its init first. Each test compares features, logits, every loss
term (atol TOL) and every term's gradient w.r.t. every learned tensor (also relative to its size,
GRAD_RTOL), then computes the reference once more with ONE choice flipped (named in its docstring)
and checks that it differs by more than FAR. Tiny CLIP: text width 64, vision 96, embed 48.
"""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel
from transformers.activations import QuickGELUActivation

from llamp.baselines.cocoop import CoCoOp, CoCoOpConfig
from llamp.baselines.coop import CoOp, CoOpConfig
from llamp.baselines.kgcoop import KgCoOp, KgCoOpConfig
from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.baselines.promptsrc import PromptSRCConfig, PromptSRCPromptLearner
from llamp.clip.loading import load_clip
from llamp.prompted_clip import lora_disabled

TOL, GRAD_RTOL, FAR = 1e-5, 1e-4, 1e-3
CLASSES = ["red circle", "ring-tailed lemur", "sea_lion", "cat"]  # names of 2, 5, 2 and 1 tokens
LABELS = torch.tensor([1, 0, 3])
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a plain background."]


def images(n=3):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def fresh_clip(path):
    """A CLIP of the test's own: the prompt learners freeze it and swap its activations."""
    torch.manual_seed(0)
    return load_clip("ViT-B/16", path)


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


def move_off_init(model, std=0.05):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn_like(p))
    return {n: p for n, p in model.named_parameters() if p.requires_grad and p.numel()}  # MaPLe, depth 1: no deep


# ---- the references: the releases' computations from CLIP's own modules ----------------------
@contextlib.contextmanager
def stock_activations(clip):
    """CLIP's own QuickGELU in every layer while a reference runs (autograd keeps it for the backward)."""
    layers = [*clip.text_model.encoder.layers, *clip.vision_model.encoder.layers]
    ours = [layer.mlp.activation_fn for layer in layers]
    for layer in layers:
        layer.mlp.activation_fn = QuickGELUActivation()
    try:
        yield
    finally:
        for layer, fn in zip(layers, ours):
            layer.mlp.activation_fn = fn


def tokenize(tokenizer, texts, length=77):
    """``clip.tokenize``: <SOT> ... <EOT>, then zeros, ``[N, 77]``."""
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        row = tokenizer(text).input_ids
        ids[i, :len(row)] = torch.tensor(row)
    return ids


def prompt_parts(clip, tokenizer, words, n_ctx, classnames=CLASSES):
    """The releases' PromptLearner buffers: ids of "{words} {name}." ``[C, 77]``, the embeddings of <SOT>
    ``[C, 1, W]`` and of everything after the n_ctx context tokens ``[C, 76 - n_ctx, W]``, name lengths."""
    names = [c.replace("_", " ") for c in classnames]
    ids = tokenize(tokenizer, [f"{words} {name}." for name in names])
    with torch.no_grad():
        embeds = clip.text_model.embeddings.token_embedding(ids)
    lengths = [len(tokenizer(name, add_special_tokens=False).input_ids) for name in names]
    return ids, embeds[:, :1], embeds[:, 1 + n_ctx:], lengths


def ref_text(clip, embeds, ids, deep=(), read_at=None):
    """Text features ``[C, E]`` of token embeddings ``embeds [C, L, W]`` (the prompts in them).

    ``deep[i - 1]`` ``[n, W]`` replaces tokens 1..n entering layer i (MaPLe's and IVLP's deep prompts,
    no positions); after the last the tokens flow on. Read at argmax(ids) unless ``read_at`` ``[C]``.
    """
    text = clip.text_model
    x = embeds + text.embeddings.position_embedding.weight[:embeds.shape[1]]  # every position, learned or not
    length = x.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]  # causal
    for i, layer in enumerate(text.encoder.layers):
        if 0 < i <= len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:, :1], deep[i - 1].unsqueeze(0).expand(len(x), -1, -1), x[:, 1 + n:]], dim=1)
        x = layer(x, mask)
    x = text.final_layer_norm(x)
    at = ids.argmax(-1) if read_at is None else read_at
    return clip.text_projection(x[torch.arange(len(x)), at])


def ref_image(clip, pixels, prompts=()):
    """Image features ``[B, E]``: ``prompts[0]`` ``[n, Wv]`` appended after the embedded patches (positions
    added) before the pre-norm, ``prompts[i]`` replacing those n tokens entering layer i; class token read."""
    vision = clip.vision_model
    x = vision.embeddings(pixels)  # [B, 1 + patches, Wv]
    batch = len(x)
    if prompts:
        x = torch.cat([x, prompts[0].unsqueeze(0).expand(batch, -1, -1)], dim=1)
    x = vision.pre_layrnorm(x)
    for i, layer in enumerate(vision.encoder.layers):
        if 0 < i < len(prompts):
            n = prompts[i].shape[0]
            x = torch.cat([x[:, :-n], prompts[i].unsqueeze(0).expand(batch, -1, -1)], dim=1)
        x = layer(x, None)
    return clip.visual_projection(vision.post_layernorm(x[:, 0]))


def template_features(clip, tokenizer, templates, classnames=CLASSES):
    """Frozen CLIP's raw features of every template and class ``[T, C, E]``."""
    with torch.no_grad():
        out = []
        for t in templates:
            ids = tokenize(tokenizer, [t.format(c.replace("_", " ")) for c in classnames])
            out.append(ref_text(clip, clip.text_model.embeddings.token_embedding(ids), ids))
        return torch.stack(out)


def scaled_cosines(scale, image, text):
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()


def compare(ours, ref, params, terms):
    """``ours[k]`` vs ``ref[k]`` within TOL; the gradient of each loss term in ``terms`` w.r.t. each learned
    tensor (unused: zero) within TOL (times its largest entry above 1) and GRAD_RTOL of its largest entry
    (some are ~1e-4: TOL alone would not see them). Every learned tensor must get a gradient."""
    worst = {k: (ours[k] - ref[k]).abs().max().item() for k in ours if ours[k].shape == ref[k].shape}
    assert set(worst) == set(ours), "shapes differ"
    relative, names, tensors = {}, list(params), list(params.values())
    for term in terms:
        got = torch.autograd.grad(ours[term], tensors, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(ref[term], tensors, retain_graph=True, allow_unused=True)
        for name, p, g, w in zip(names, tensors, got, want):
            g, w = (torch.zeros_like(p) if t is None else t for t in (g, w))
            diff, size = (g - w).abs().max().item(), w.abs().max().item()
            worst[f"d{term}/d{name}"] = diff / max(1.0, size)
            if size > 0:
                relative[name] = max(relative.get(name, 0.0), diff / size)
    print("max |ours - release|:", {k: f"{v:.1e}" for k, v in worst.items()})
    print("gradients, relative:", {k: f"{v:.1e}" for k, v in relative.items()})
    assert max(worst.values()) < TOL, {k: v for k, v in worst.items() if v >= TOL}
    assert set(relative) == set(names) and max(relative.values()) < GRAD_RTOL, relative


def far(ours, variant):
    diff = (ours - variant).abs().max().item()
    print(f"variant differs by {diff:.3g}")
    assert diff > FAR


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


# ---- ZeroshotCLIP ---------------------------------------------------------------------------
@pytest.mark.parametrize("ensemble", [False, True])
def test_zero_shot_clip_equals_clips_own_features(tiny_models, tmp_path_factory, ensemble):
    """The trainer's logits: CLIP's get_text_features of the template sentences normalised (ENSEMBLE: averaged,
    renormalised, the release's ZeroshotCLIP2) against get_image_features. The hand-written towers of the
    references above are checked against CLIP's own forward here. Variant: text read at token 76, not <EOT>."""
    from test_templates import in_process_trainer

    trainer = in_process_trainer("ZeroshotCLIP", tiny_models, str(tmp_path_factory.getbasetemp() / "zs_data"),
                                 tmp_path_factory.mktemp("zs"), "TRAINER.ZEROSHOTCLIP.ENSEMBLE", str(ensemble))
    classnames, templates = list(trainer.dm.dataset.classnames), trainer.templates.templates
    assert (len(templates) > 1) if ensemble else (len(templates) == 1)
    x = images()
    ours = trainer.model_inference(x)

    clip = fresh_clip(tiny_models["clip"])
    model, tok = clip.model, clip.tokenizer
    with torch.no_grad():
        ids = torch.stack([tokenize(tok, [t.format(c.replace("_", " ")) for c in classnames]) for t in templates])
        text = torch.stack([model.get_text_features(input_ids=i).pooler_output for i in ids])  # [T, C, E]
        image = model.get_image_features(pixel_values=x).pooler_output
        by_hand = template_features(model, tok, templates, classnames)
        assert (by_hand - text).abs().max() < TOL
        assert (ref_image(model, x) - image).abs().max() < TOL
        last = torch.full((len(classnames),), 76)
        at_last = torch.stack([ref_text(model, model.text_model.embeddings.token_embedding(i), i, read_at=last)
                               for i in ids])

    def logits(per_template):
        weights = F.normalize(F.normalize(per_template, dim=-1).mean(0), dim=-1)  # [C, E]
        return model.logit_scale.exp() * F.normalize(image, dim=-1) @ weights.t()

    diff = (ours - logits(text)).abs().max().item()
    print(f"max |ours - release|: logits {diff:.1e}")
    assert diff < TOL
    far(ours, logits(at_last))


# ---- LLaMP ----------------------------------------------------------------------------------
def test_llamp_losses_and_gradients_equal_the_release(tiny_models):
    """test_llamp_model pins the text layout (its release_text_features, reused here); this adds the image side
    (visual prompts, LoRA), every loss term and gradient. The release's teacher tower carries the LoRA being
    trained (TEACHER_USES_LORA True); its launch script: label smoothing 0, lambda_dist 2.5. Variant: the
    teacher without LoRA (our default)."""
    from test_llamp_model import RELEASE_CLASSNAMES, build, class_kv, release_text_features

    targets = torch.randn(len(RELEASE_CLASSNAMES), 48, generator=torch.Generator().manual_seed(2))
    clip, model = build(tiny_models, seed=3, classnames=RELEASE_CLASSNAMES, targets=targets, teacher_uses_lora=True,
                        lora_dropout=0.0)
    model.eval()
    params = move_off_init(model)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # in the release's clamp [0, 4.605]; at scale 100 fp32 rounding nears TOL
    kv = class_kv(tiny_models["llm"], RELEASE_CLASSNAMES)
    x, labels = images(), torch.tensor([2, 0, 3])
    losses, logits = model.losses(x, labels, kv)
    ours = {"text": model.text_features(kv), "image": model.image_features(x),
            "logits": logits, **losses}

    model.logit_scale.data = model.logit_scale.data.clamp(0, 4.605)  # the release, before each forward
    scale = model.logit_scale.exp()
    decoded = model.decoder(kv)  # [C, M, llm hidden]: the LLM side (tests/test_llm_decoder.py)
    with stock_activations(clip.model):
        text = release_text_features(clip, model, decoded)
        image = ref_image(clip.model, x, list(model.visual_prompts))
        with torch.no_grad():
            teacher = ref_image(clip.model, x)  # the LoRA'd tower, no visual prompts
            with lora_disabled(clip.model.vision_model):
                frozen = ref_image(clip.model, x)
    ref_logits = scaled_cosines(scale, image, text)

    def kl(teacher_image):
        teacher_logits = scaled_cosines(scale, teacher_image, targets)
        return 2.5 * F.kl_div(F.log_softmax(ref_logits, -1), F.log_softmax(teacher_logits, -1),
                              reduction="sum", log_target=True) / ref_logits.numel()

    def image_l1(teacher_image):
        return 10 * F.l1_loss(F.normalize(image, dim=-1), F.normalize(teacher_image, dim=-1))

    ref = {"text": text, "image": image, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, labels),
           "text_l1": 25 * F.l1_loss(F.normalize(targets, dim=-1), F.normalize(text, dim=-1)),
           "image_l1": image_l1(teacher), "kl": kl(teacher)}
    compare(ours, ref, params, list(losses))
    far(losses["image_l1"] + losses["kl"], image_l1(frozen) + kl(frozen))
