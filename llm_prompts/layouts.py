"""The token sequences of a build: the prompt the LLM answers, and the sequence whose keys/values are cached.

Two layouts (``--layout``), both over the same chat text: the conversation
rendered by the tokenizer's chat template, ending with the answer opening
(see ``queries.chat_prompt``).

``release`` (the default) is how the authors' release builds its cache, so
that the same LLM and query wording give the same keys/values and mask:

- the prompt text is tokenised *with* the tokenizer's special tokens. The
  rendered chat already starts with the BOS text, so a LLaMA-2 prompt starts
  with two BOS tokens; left-padded, cut at 128 tokens (at the tokenizer's
  truncation side, the end for LLaMA-2), all classes of a template padded
  together. The answer is generated greedily from exactly these ids;
- noun phrases are spaCy's noun chunks of the answer as they are (pronouns
  and repeats kept), joined with ", ";
- the joined phrases are tokenised on their own, again with special tokens
  (a BOS for LLaMA-2), left-padded and cut at 128, and appended after the
  padded prompt: ``[pad..][prompt][pad..][BOS][noun phrases]``. The mask is
  0 on every pad and positions count real tokens (``positions_from_mask``), so
  they run on across the gap.

``contiguous`` is one left-padded run, ``[pad..][prompt noun phrases]``: the
prompt text, a space and the ", "-joined phrases, tokenised without added
special tokens (one BOS, from the chat text, none before the phrases); the
prompt for generation likewise; noun phrases cleaned (pronoun-only chunks and
repeats dropped). No truncation.

Padding uses the tokenizer's pad token (the unknown token for LLaMA-2, see
``llm.load_tokenizer``); the mask, not the pad id, keeps it out of every
real token's keys and values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from llamp.cache_kv import positions_from_mask
from llamp.errors import ConfigError

from .queries import with_noun_phrases

RELEASE = "release"
CONTIGUOUS = "contiguous"
RELEASE_MAX_TOKENS = 128  # the release cuts each tokenised part (prompt, noun phrases) here


@dataclass(frozen=True)
class Layout:
    """How a layout turns prompts and noun phrases into token ids."""

    name: str
    summary: str  # one line, for --help and inspect
    special_tokens: bool  # tokenise with the tokenizer's special tokens (a BOS for LLaMA-2)
    max_tokens: int | None  # each tokenised part is cut to this many tokens
    phrases_apart: bool  # noun phrases tokenised on their own and appended after the padded prompt
    all_noun_chunks: bool  # spaCy's noun chunks as they are, as the release takes them


LAYOUTS = {
    RELEASE: Layout(RELEASE, "[pad][prompt][pad][BOS noun phrases], special tokens added (two BOS for LLaMA-2), "
                             f"each part cut at {RELEASE_MAX_TOKENS} tokens: the authors' release",
                    special_tokens=True, max_tokens=RELEASE_MAX_TOKENS, phrases_apart=True, all_noun_chunks=True),
    CONTIGUOUS: Layout(CONTIGUOUS, "[pad][prompt noun phrases], no special tokens added (one BOS)",
                       special_tokens=False, max_tokens=None, phrases_apart=False, all_noun_chunks=False),
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ConfigError(f"--layout {name}: choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


@dataclass
class Tokens:
    """Left-padded token ids of several texts, padded together."""

    input_ids: torch.Tensor  # [n, seq]
    attention_mask: torch.Tensor  # [n, seq], 1 = token
    truncated: int = 0  # rows that lost tokens to truncation

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, indices: Sequence[int] | slice) -> "Tokens":
        """Some rows, with the padded width of the whole (as the release slices its batches)."""
        index = indices if isinstance(indices, slice) else torch.as_tensor(list(indices), dtype=torch.long)
        return Tokens(self.input_ids[index], self.attention_mask[index])

    def real_ids(self) -> list[list[int]]:
        """Each row's tokens without padding."""
        return [ids[mask.bool()].tolist() for ids, mask in zip(self.input_ids, self.attention_mask)]

    @property
    def position_ids(self) -> torch.Tensor:
        """Real tokens count from 0; positions run on across padding in the middle (padding on the left: 0)."""
        return positions_from_mask(self.attention_mask)


def tokenize(tokenizer: Any, texts: Sequence[str], special_tokens: bool, max_tokens: int | None) -> Tokens:
    """``texts`` left-padded together; cut to ``max_tokens`` where the tokenizer cuts (its truncation side)."""
    truncated = 0
    if max_tokens is not None:
        lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=special_tokens)["input_ids"]]
        truncated = sum(n > max_tokens for n in lengths)
    batch = tokenizer(list(texts), add_special_tokens=special_tokens, padding=True, padding_side="left",
                      truncation=max_tokens is not None, max_length=max_tokens, return_tensors="pt")
    return Tokens(batch["input_ids"], batch["attention_mask"], truncated)


def prompt_tokens(tokenizer: Any, prompts: Sequence[str], layout: Layout) -> Tokens:
    """The ids the LLM answers from: every prompt of a template, padded together."""
    return tokenize(tokenizer, prompts, layout.special_tokens, layout.max_tokens)


def cached_tokens(tokenizer: Any, prompts: Sequence[str], noun_phrases: Sequence[Sequence[str]],
                  layout: Layout) -> tuple[Tokens, int]:
    """The sequence whose keys/values are cached, and how many noun-phrase lists were cut."""
    if not layout.phrases_apart:
        texts = [with_noun_phrases(p, list(phrases)) for p, phrases in zip(prompts, noun_phrases)]
        return tokenize(tokenizer, texts, layout.special_tokens, layout.max_tokens), 0
    prompt = prompt_tokens(tokenizer, prompts, layout)
    phrases = tokenize(tokenizer, [", ".join(p) for p in noun_phrases], layout.special_tokens, layout.max_tokens)
    joined = Tokens(torch.cat([prompt.input_ids, phrases.input_ids], dim=1),  # [n, prompt seq + phrase seq]
                    torch.cat([prompt.attention_mask, phrases.attention_mask], dim=1), prompt.truncated)
    return joined, phrases.truncated
