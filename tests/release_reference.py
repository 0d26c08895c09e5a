"""The releases' computations, rebuilt by hand from CLIP's own modules, for the test_*_release.py files
(each method's computation against its authors' release).

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
and checks that it differs by more than FAR (``compare``, ``far``). Tiny CLIP: text width 64, vision 96,
embed 48. test_zsclip_release.py checks the hand-written towers against CLIP's own forward.
"""
import contextlib

import torch
import torch.nn.functional as F
from transformers.activations import QuickGELUActivation

from llamp.clip.loading import load_clip

TOL, GRAD_RTOL, FAR = 1e-5, 1e-4, 1e-3
CLASSES = ["red circle", "ring-tailed lemur", "sea_lion", "cat"]  # names of 2, 5, 2 and 1 tokens
LABELS = torch.tensor([1, 0, 3])


def images(n=3):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def fresh_clip(path):
    """A CLIP of the test's own: the prompt learners freeze it and swap its activations."""
    torch.manual_seed(0)
    return load_clip("ViT-B/16", path)


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
