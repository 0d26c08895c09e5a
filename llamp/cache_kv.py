"""One query template's cached keys/values for some classes: the one row type from the cache reader
(``llamp.knowledge_cache``) through the staging and the model to the LLM prompt decoder; and where a
cached token sits.

Padding may sit on the left of a row and in a gap inside it (the release's
``[pad][prompt][pad][BOS noun phrases]``): only the mask says where a class's
tokens are. A token's position counts the real tokens before it, so positions
run on across a gap and new tokens continue at the number of real tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Rotary position of every slot ``[n, seq]`` of rows with attention ``mask`` ``[n, seq]`` (1 = token):
    the number of real tokens before it (left padding: 0; a gap repeats the position before it)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class CacheKV:
    """``keys[i]`` / ``values[i]``: decoder layer ``layer_indices[i]``'s, each ``[n, kv_heads, seq, head_dim]``
    (keys after rotary); ``mask``: ``[n, seq]`` (long, 1 = token)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    layer_indices: list[int]

    @property
    def lengths(self) -> torch.Tensor:
        """Number of cached tokens per class ``[n]``: new tokens continue at this position."""
        return self.mask.sum(-1)

    @property
    def positions(self) -> torch.Tensor:
        return positions_from_mask(self.mask)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CacheKV":
        move = dict(device=device, non_blocking=non_blocking)
        return CacheKV([k.to(**move) for k in self.keys], [v.to(**move) for v in self.values],
                       self.mask.to(**move), list(self.layer_indices))
