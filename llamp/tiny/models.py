"""Tiny models in Hugging Face format, for tests and the demo.

    python -m llamp.tiny --out DIR [--random-weights]

writes ``DIR/clip`` (a CLIP with the real 49408-token vocabulary and tokenizer
files, 64-wide towers) and ``DIR/llm`` (the Llama-2-style chat model of
``llamp.tiny.llms``, hidden 64, whose tokenizer, like LLaMA-2's, adds a BOS token
when tokenising). Everything downstream loads them through the same code as the
real models.

The CLIP is pre-trained for a minute or two on captioned Synthetic-style
drawings (``llamp.tiny.pretraining``), so that zero-shot accuracy on
Synthetic is well above chance and prompt learning has something to improve;
``--random-weights`` keeps the random-weight CLIP. The LLM's weights are random.
Everything is seeded: two runs on one machine write identical tensors.
"""
from __future__ import annotations

import os

import torch
from transformers import CLIPConfig, CLIPModel

from ..atomic_files import write_folder_atomic, write_json_atomic
from ..clip.tokenizer import CONTEXT_LENGTH, build_clip_tokenizer
from .llms import DEMO_FAMILY, write_tiny_llm
from .pretraining import pretrain_clip

# Widths differ on purpose (text 64, vision 96, joint 48) so that a width mix-up fails loudly.
# Heads follow OpenAI's 64-wide convention so the model round-trips through the .pt format.
TINY_CLIP = dict(
    text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=1, max_position_embeddings=CONTEXT_LENGTH,
                     hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406,
                     eos_token_id=49407, pad_token_id=49407),
    vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2,
                       num_attention_heads=1, image_size=224, patch_size=32,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5),
    projection_dim=48,
)
PRETRAINING_RECORD = "pretraining.json"  # in a pre-trained tiny CLIP's folder: the recipe and its losses


def write_tiny_clip(folder: str, seed: int = 0, pretrained: bool = True, log_every: int = 0) -> None:
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**TINY_CLIP))
    tokenizer = build_clip_tokenizer()
    if pretrained:
        record = pretrain_clip(model, tokenizer, log_every=log_every)
        write_json_atomic(os.path.join(folder, PRETRAINING_RECORD), record)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def is_pretrained(clip_folder: str) -> bool:
    return os.path.isfile(os.path.join(clip_folder, PRETRAINING_RECORD))


def write_tiny_models(out: str, force: bool = False, pretrained: bool = True,
                      log_every: int = 0) -> dict[str, str]:
    """Write ``out/clip`` and ``out/llm`` (each atomically); keep existing ones unless ``force``.

    An existing CLIP of the other kind (random weights where ``pretrained`` is asked, or the reverse)
    is replaced.
    """
    paths = {"clip": os.path.join(out, "clip"), "llm": os.path.join(out, "llm")}
    writers = {"clip": lambda path: write_folder_atomic(path, lambda tmp: write_tiny_clip(
                   tmp, pretrained=pretrained, log_every=log_every)),
               "llm": lambda path: write_tiny_llm(DEMO_FAMILY, path)}
    os.makedirs(out, exist_ok=True)
    for name, path in paths.items():
        other_kind = name == "clip" and os.path.isdir(path) and is_pretrained(path) != pretrained
        if os.path.isdir(path) and not force and not other_kind:
            continue
        writers[name](path)
    return paths
