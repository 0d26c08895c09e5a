"""Greedy answers of a chat LLM to prompts given as left-padded token ids."""
from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from llamp.quiet import progress_disabled

from .layouts import Tokens


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, prompts: Tokens, max_new_tokens: int = 64,
                     batch_size: int = 16, progress: bool = True) -> list[str]:
    """Continue each prompt greedily for up to ``max_new_tokens`` tokens; return the new text only.

    ``prompts`` are the ids a layout built (``layouts.prompt_tokens``), chat
    markup included; batches are slices of it, keeping its padded width. The
    new tokens are decoded without special tokens and returned as decoded
    (not stripped). A sequence stops at the model's end-of-turn token(s) (its
    generation config, else the tokenizer's EOS); positions come from the
    mask, so left padding does not shift them.
    """
    from transformers import GenerationConfig

    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch",
                      leave=False, disable=progress_disabled(progress)):
        batch = prompts.rows(slice(start, start + batch_size))
        input_ids = batch.input_ids.to(device)  # [batch, seq], left-padded
        output = model.generate(input_ids=input_ids, attention_mask=batch.attention_mask.to(device),
                                generation_config=config)
        new_tokens = output[:, input_ids.shape[1]:].cpu()
        answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        del output
    return answers
