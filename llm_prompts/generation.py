"""Greedy answers of a chat LLM to a list of prompts, in left-padded batches."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm import tqdm


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 64,
                     batch_size: int = 16, progress: bool = True) -> list[str]:
    """Continue each prompt greedily for up to ``max_new_tokens`` tokens; return the new text only.

    The prompts already hold the chat markup (see ``queries.chat_prompt``), so
    no special tokens are added when tokenising. A sequence stops at the
    model's end-of-turn token(s) (its generation config, else the tokenizer's EOS).
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
                      leave=False, disable=not progress):
        batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                          add_special_tokens=False)
        input_ids = batch["input_ids"].to(device)  # [batch, seq], left-padded
        output = model.generate(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                                generation_config=config)
        new_tokens = output[:, input_ids.shape[1]:].cpu()
        answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        del output
    return answers
