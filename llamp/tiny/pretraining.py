"""Contrastive pre-training of the tiny CLIP, so that its zero-shot accuracy on Synthetic means something.

A random-weight CLIP gives nearly identical features to every image, and every
method trained on it sits at chance. Here the tiny CLIP learns from captioned
drawings made on the fly by llamp/tiny/shapes.py ("a photo of a small red
circle", "a blue ring on a noisy background", ...) with CLIP's symmetric
in-batch loss. Each batch holds every colour-shape pair once, so no two images
of a batch share a caption's class: the in-batch negatives are true negatives.

The drawings come from random streams seeded with ``seed`` and the step, never
the Synthetic dataset's own seed, so pre-training never sees the dataset's
images. Images go through what a trainer's test transform does to the stored
JPEGs (resize to the model's image size, bicubic, CLIP normalisation). The
recipe is short on purpose: zero-shot accuracy lands well above chance and well
below 100%, which leaves the prompt learners room to show that they learn.
Everything is seeded; on a given machine two runs give identical weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from ..clip.loading import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
from .shapes import CLASSES, as_stored, draw_shape, size_word

# Caption wordings, written for this project. {c} colour, {s} shape, {z} "small"/"large" when the
# shape is clearly one of them (wordings with {z} are used only then).
CAPTIONS = (
    "{c} {s}", "a {c} {s}", "a photo of a {c} {s}", "a picture of a {c} {s}.", "a drawing of a {c} {s}",
    "a {c} {s} on a noisy background", "a {c} {s} among grey lines and dots", "there is a {c} {s} in the image",
    "the {s} is {c}", "a {c} coloured {s}", "a photo of a {z} {c} {s}", "a {z} {c} {s}",
    "a small image of a {c} {s}", "a {c} {s} shape",
)


MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps its learned temperature at 100
# Why the temperature is held at that clamp rather than learned: CoOp, CoCoOp, KgCoOp, MaPLe and PromptSRC
# train through CLIP's own logit scale, and a real CLIP ends its pre-training at the clamp. Learned from
# CLIP's initial 1/0.07, the tiny CLIP's stays near 14 in these 1000 steps (14.5 even at a 20 times larger
# rate for it): the baselines' softmax would be seven times softer than on ViT-B/16. Held at 100 from the
# start, the features learn the geometry that scale needs, as a real CLIP's do.
LOGIT_SCALE_RULE = "held at CLIP's clamp (100) throughout pre-training, as a real CLIP ends at it"


@dataclass(frozen=True)
class PretrainingRecipe:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    seed: int = 0


def caption(rng: np.random.Generator, colour: str, shape: str, radius: int) -> str:
    size = size_word(radius)
    wordings = [w for w in CAPTIONS if "{z}" not in w or size]
    return wordings[int(rng.integers(len(wordings)))].format(c=colour, s=shape, z=size)


def pixel_batch(images: list, image_size: int) -> torch.Tensor:
    """PIL images -> normalised ``[batch, 3, image_size, image_size]``, as Dassl's test transform makes them."""
    arrays = [np.asarray(im.resize((image_size, image_size), resample=3), dtype=np.float32)  # 3 = bicubic
              for im in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def draw_batch(seed: int, step: int, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """One image and one caption per colour-shape pair, from the stream of (seed, step)."""
    # Stream ids start at 1_000_000: well away from the dataset's fixed seed (a single small integer).
    rng = np.random.default_rng([1_000_000 + seed, step])
    images, captions = [], []
    for colour, shape in CLASSES:
        image, radius = draw_shape(rng, colour, shape)
        images.append(as_stored(image))
        captions.append(caption(rng, colour, shape, radius))
    return pixel_batch(images, image_size), captions


def _lr_factor(step: int, recipe: PretrainingRecipe) -> float:
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def pretrain_clip(model: CLIPModel, tokenizer: CLIPTokenizer, recipe: PretrainingRecipe = PretrainingRecipe(),
                  log_every: int = 0) -> dict:
    """Train ``model`` in place with CLIP's symmetric in-batch loss; return a record of the run."""
    torch.manual_seed(recipe.seed)
    image_size = model.config.vision_config.image_size
    with torch.no_grad():
        model.logit_scale.fill_(MAX_LOGIT_SCALE)
    model.logit_scale.requires_grad_(False)  # LOGIT_SCALE_RULE: not trained
    weights = [(n, p) for n, p in model.named_parameters() if n != "logit_scale"]
    decay = [p for n, p in weights if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in weights if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe))
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(recipe.steps):
        pixels, captions = draw_batch(recipe.seed, step, image_size)
        # Padding to the batch's longest caption is enough: the text tower is causal and reads the <EOT> position.
        ids = tokenizer(captions, padding=True, return_tensors="pt").input_ids
        image_features = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text_features = F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.t()  # [images, captions]
        labels = torch.arange(len(captions))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(round(loss.item(), 4))
        if log_every and (step + 1) % log_every == 0:
            print(f"pre-training step {step + 1}/{recipe.steps}: loss {loss.item():.3f}", flush=True)
    model.logit_scale.requires_grad_(True)
    model.eval()
    return {"recipe": asdict(recipe), "seconds": round(time.perf_counter() - start, 1),
            "first_losses": losses[:5], "last_losses": losses[-5:],
            "logit_scale": round(model.logit_scale.exp().item(), 3), "logit_scale_rule": LOGIT_SCALE_RULE}
