"""Loading the chat LLM and its tokenizer from local files only."""
from __future__ import annotations

from typing import Any

import torch

from llamp.errors import ConfigError, from_local_files


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(device)


# --dtype: what the LLM runs in during the build (the keys/values are stored in it too).
BUILD_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_BUILD_DTYPE = "fp32"  # the release loads the LLM without a dtype: fp32 throughout


def build_dtype(name: str) -> torch.dtype:
    """``--dtype`` as a torch dtype; anything else is one ConfigError line naming the flag."""
    if name not in BUILD_DTYPES:
        raise ConfigError(f"--dtype {name}: choose one of {', '.join(BUILD_DTYPES)}")
    return BUILD_DTYPES[name]


def load_tokenizer(source: str) -> Any:
    """The LLM's tokenizer, set up for batched generation: left padding and a pad token.

    LLaMA-2 has no pad token; the unknown token is used (else EOS), always
    together with an attention mask, so its embedding never matters.
    """
    from transformers import AutoTokenizer

    tokenizer = from_local_files(AutoTokenizer, source, f"--llm {source}: cannot load its tokenizer")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise ConfigError(f"--llm {source}: the tokenizer has no pad, unknown or end-of-sequence token")
    return tokenizer


def load_llm(source: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The causal LM in eval mode on ``device`` (loaded straight there on CUDA)."""
    from transformers import AutoModelForCausalLM

    on_gpu = device.type == "cuda"
    kwargs: dict[str, Any] = {"dtype": dtype}
    if on_gpu:  # weights go straight to the GPU, without a full copy in host memory
        kwargs["device_map"] = str(device)
    model = from_local_files(AutoModelForCausalLM, source, f"--llm {source}: cannot load a causal LM", **kwargs)
    return (model if on_gpu else model.to(device)).eval()
