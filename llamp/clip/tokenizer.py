"""An offline CLIP tokenizer, and tokenising sentences as ``clip.tokenize`` does.

OpenAI's CLIP checkpoints carry no tokenizer files, but the ``openai-clip``
package ships the byte-pair-encoding table they were trained with. From it
we build a Hugging Face ``CLIPTokenizer`` that tokenises exactly like
``clip.tokenize`` (checked in tests), without touching the network.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache

import torch
from transformers import CLIPTokenizer

from ..errors import MissingFileError
from ..quiet import ignore_pkg_resources_warning

CONTEXT_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# The BPE file lists more merges than CLIP used: CLIP's vocabulary has 49408
# entries = 2 x 256 byte symbols + 48894 merges + 2 special tokens.
NUM_MERGES = 49408 - 2 * 256 - 2


def bpe_file_path() -> str:
    """Path of the BPE table shipped inside the openai-clip package."""
    ignore_pkg_resources_warning()  # openai-clip imports pkg_resources
    try:
        import clip  # the openai-clip package
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise MissingFileError(
            "the CLIP BPE table comes with the openai-clip package: pip install openai-clip 'setuptools<81'"
        ) from e
    path = os.path.join(os.path.dirname(clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(path):
        raise MissingFileError(f"CLIP BPE table not found at {path}; reinstall openai-clip")
    return path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters, in vocabulary order.

    Printable bytes map to themselves and come first; the other bytes get the
    characters from U+0100 on, in byte order, and follow.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    with gzip.open(bpe_file_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is a header; the next NUM_MERGES lines are the merges CLIP uses.
    merges = [tuple(line.split()) for line in lines[1 : 1 + NUM_MERGES]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_clip_tokenizer() -> CLIPTokenizer:
    """A ``CLIPTokenizer`` equivalent to ``clip.tokenize``, built without network."""
    vocab, merges = _vocab_and_merges()
    # Pass the loaded tables: CLIPTokenizer(vocab_file=...) ignores files in transformers 5.
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CONTEXT_LENGTH)


def clip_token_ids(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids ``[len(texts), 77]`` of whole sentences, padded and truncated like ``clip.tokenize``."""
    return tokenizer(texts, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH,
                     return_tensors="pt").input_ids
