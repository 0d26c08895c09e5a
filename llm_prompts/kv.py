"""Keys and values that the last decoder layers of an LLM cache for a list of texts."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm


@torch.inference_mode()
def extract_kv(model: Any, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
               progress: bool = True) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Run the LLM over ``texts`` and keep the attention keys/values of ``layers``.

    Returns ``{layer: (keys, values)}``, each ``[len(texts), kv_heads, seq, head_dim]``
    on the CPU, and the attention mask ``[len(texts), seq]``, left-padded to the
    longest text. Keys are as the attention layer caches them (after rotary
    embedding); positions count real tokens only, so a text's keys do not
    depend on how much padding its batch needed. The device holds one batch
    at a time: each batch's K/V is moved to the CPU before the next starts.
    """
    device = next(model.parameters()).device
    decoder = model.base_model  # the transformer without the LM head (no [batch, seq, vocab] logits)
    pieces: list[tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="keys/values", unit="batch",
                      leave=False, disable=not progress):
        batch = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                          add_special_tokens=False)
        mask = batch["attention_mask"]  # [batch, seq], zeros on the left
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        output = decoder(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device),
                         position_ids=position_ids.to(device), use_cache=True)
        cache = output["cache"] if "cache" in output else output["past_key_values"]
        kv = {layer: (cache.layers[layer].keys.cpu(), cache.layers[layer].values.cpu()) for layer in layers}
        pieces.append((kv, mask))
        del output, cache

    seq = max(mask.shape[1] for _, mask in pieces)
    masks = torch.cat([F.pad(mask, (seq - mask.shape[1], 0)) for _, mask in pieces])
    result = {}
    for layer in layers:
        # keys/values are [batch, kv_heads, seq, head_dim]: pad the seq dim on the left
        keys = torch.cat([F.pad(kv[layer][0], (0, 0, seq - kv[layer][0].shape[2], 0)) for kv, _ in pieces])
        values = torch.cat([F.pad(kv[layer][1], (0, 0, seq - kv[layer][1].shape[2], 0)) for kv, _ in pieces])
        result[layer] = (keys, values)
    return result, masks
