"""Keys and values that the last decoder layers of an LLM cache for token sequences."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from tqdm import tqdm

from llamp.quiet import progress_disabled

from .layouts import Tokens


@torch.inference_mode()
def extract_kv(model: Any, tokens: Tokens, layers: Sequence[int], batch_size: int = 16,
               progress: bool = True) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Run the LLM over ``tokens`` and keep the attention keys/values of ``layers``.

    ``tokens``: the ids and mask a layout built (``layouts.cached_tokens``),
    padding on the left and possibly in the middle. Returns ``{layer: (keys,
    values)}``, each ``[len(tokens), kv_heads, seq, head_dim]`` on the CPU, and
    the mask ``[len(tokens), seq]``. Keys are as the attention layer caches them
    (after rotary embedding); positions count real tokens only
    (``positions_from_mask``), so a token's keys do not depend on how much
    padding sits before it. The device holds one batch at a time: each
    batch's K/V is moved to the CPU before the next starts.
    """
    device = next(model.parameters()).device
    decoder = model.base_model  # the transformer without the LM head (no [batch, seq, vocab] logits)
    pieces: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = []
    for start in tqdm(range(0, len(tokens), batch_size), desc="keys/values", unit="batch",
                      leave=False, disable=progress_disabled(progress)):
        batch = tokens.rows(slice(start, start + batch_size))  # the full padded width: rows stack below
        output = decoder(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                         position_ids=batch.position_ids.to(device), use_cache=True)
        cache = output["cache"] if "cache" in output else output["past_key_values"]
        pieces.append({layer: (cache.layers[layer].keys.cpu(), cache.layers[layer].values.cpu())
                       for layer in layers})
        del output, cache
    result = {layer: (torch.cat([kv[layer][0] for kv in pieces]), torch.cat([kv[layer][1] for kv in pieces]))
              for layer in layers}
    return result, tokens.attention_mask.clone()
