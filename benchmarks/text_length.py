"""LLaMP's text tower over the release layout's short sequence against CLIP's full 77 tokens.

    python benchmarks/text_length.py [--steps 3] [--json FILE]

Real widths with random weights: CLIP ViT-B/16 (text 512 x 12 layers, vision
768 x 12), one LLaMA-2-7B-shaped decoder layer read through the real loader,
the reference LLaMP config (M = 16, D = 9, visual prompts, LoRA), 24 DTD-like
class names (DTD's base half), a cache of 96 tokens, batch 4, fp32.

The same model is timed twice, alternating: with its class prompts as built
(as many positions as the longest class needs) and with them padded to 77
(what the tower computed before). The tower is causal and read at each
class's end token, so both give the same features (checked and printed);
only the cost differs. Reported: the sequence lengths, the median time of
the text features' forward + backward, and of a whole training step (forward,
backward, AdamW), and the ratios 77 / short. Absolute times depend on the CPU
and its load; run it alone and compare the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.real_width_assets import (BATCH, CACHE_LENGTH, DTD_BASE, real_width_clip,  # noqa: E402
                                          write_real_width_llm)
from benchmarks.timing import median_seconds  # noqa: E402
from llamp.clip.tokenizer import CONTEXT_LENGTH  # noqa: E402


def padded_to_77(model) -> dict[str, torch.Tensor]:
    """The model's layout buffers padded after each class's end token to CLIP's full context."""
    prompts = model.prompts
    pad = CONTEXT_LENGTH - prompts.input_ids.shape[1]
    return {"input_ids": F.pad(prompts.input_ids, (0, pad), value=int(prompts.input_ids[0, -1])),
            "position_ids": F.pad(prompts.position_ids, (0, pad))}


def use_layout(model, layout: dict[str, torch.Tensor]) -> None:
    for name, tensor in layout.items():
        setattr(model.prompts, name, tensor)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions per layout (median)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)

    from llamp.cache_kv import CacheKV
    from llamp.llm.tail import load_decoder_tail
    from llamp.model import LLaMPConfig, LLaMPModel

    clip = real_width_clip()
    with tempfile.TemporaryDirectory() as folder:
        write_real_width_llm(folder)
        tail = load_decoder_tail(folder, 1)
    targets = torch.randn(len(DTD_BASE), clip.model.config.projection_dim)
    model = LLaMPModel(clip.model, clip.tokenizer, tail, DTD_BASE, LLaMPConfig(), targets)
    model.train()
    heads, head_dim = tail.config.num_key_value_heads, tail.config.hidden_size // tail.config.num_attention_heads
    kv = CacheKV([torch.randn(len(DTD_BASE), heads, CACHE_LENGTH, head_dim)],
                 [torch.randn(len(DTD_BASE), heads, CACHE_LENGTH, head_dim)],
                 torch.ones(len(DTD_BASE), CACHE_LENGTH, dtype=torch.long), tail.layer_indices)
    images, labels = torch.randn(BATCH, 3, 224, 224), torch.arange(BATCH)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def text_forward_backward():
        model.zero_grad(set_to_none=True)
        model.text_features(kv).sum().backward()

    def training_step():
        optimizer.zero_grad(set_to_none=True)
        losses, _ = model.losses(images, labels, kv)
        sum(losses.values()).backward()
        optimizer.step()

    layouts = {"short": {"input_ids": model.prompts.input_ids, "position_ids": model.prompts.position_ids},
               "77": padded_to_77(model)}
    with torch.no_grad():
        model.eval()
        features = {}
        for name, layout in layouts.items():
            use_layout(model, layout)
            features[name] = model.text_features(kv)
        model.train()
    difference = (features["short"] - features["77"]).abs().max().item()

    result = {"classes": len(DTD_BASE), "num_llm_tokens": model.config.num_llm_tokens,
              "sequence_length": {n: int(layout["input_ids"].shape[1]) for n, layout in layouts.items()},
              "max_feature_difference": difference, "text_forward_backward_s": {}, "training_step_s": {}}
    for name, fn in (("text_forward_backward_s", text_forward_backward), ("training_step_s", training_step)):
        for layout in layouts.values():  # one warm-up each
            use_layout(model, layout)
            fn()
        timings: dict[str, list[float]] = {n: [] for n in layouts}
        for _ in range(args.steps):  # alternate, so a change of machine load hits both alike
            for layout_name, layout in layouts.items():
                use_layout(model, layout)
                timings[layout_name].append(median_seconds(fn, 1))
        result[name] = {n: statistics.median(t) for n, t in timings.items()}
    use_layout(model, layouts["short"])

    lengths = result["sequence_length"]
    print(f"{len(DTD_BASE)} DTD-like classes, M = {model.config.num_llm_tokens}: text tower over "
          f"{lengths['short']} positions (was {lengths['77']}); features equal to {difference:.1e}")
    for name in ("text_forward_backward_s", "training_step_s"):
        t = result[name]
        result[name]["ratio_77_over_short"] = t["77"] / t["short"]
        print(f"{name:24s} short {t['short']:.3f} s   77 {t['77']:.3f} s   77/short {t['77'] / t['short']:.2f}x")
    if args.json:
        from llamp.atomic_files import write_json_atomic

        write_json_atomic(args.json, result, indent=2)
    return result


if __name__ == "__main__":
    main()
