"""Where each tensor lives and in which dtype, for a trainer's TRAINER.<NAME>.PREC.

One table for every trainer, the same on CPU and CUDA (amp aside, only the device differs):

    PREC   frozen weights  autocast        trained tensors, optimiser state,  LLaMP's K/V rows
                                           checkpoints
    fp32   fp32            none            fp32                               fp32
    fp16   fp16            fp16            fp32                               (refused)
    bf16   bf16            bf16            fp32                               bf16
    amp    fp32            fp16 on CUDA,   fp32                               fp32
                           bf16 on CPU

LLaMP never computes in fp16 (the LLM's activations overflow it): its amp autocasts
to bf16 on CUDA too. Under DeepSpeed with PREC bf16 (on CPU as on CUDA) the module's
copies of the trained tensors are bf16 and DeepSpeed's ZeRO optimiser holds their
fp32 masters and the optimiser state; checkpoints save the masters. Everything else
(buffers such as LLaMP's distillation targets) keeps its dtype.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from llamp.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
_FROZEN = {"fp16": torch.float16, "bf16": torch.bfloat16}
TRAINED_DTYPE = torch.float32


def checked_precision(prec: str, allowed: tuple[str, ...], key: str) -> str:
    if prec not in allowed:
        raise ConfigError(f"{key} must be one of {allowed}, got {prec!r}")
    return prec


@dataclass(frozen=True)
class Precision:
    """The dtypes of one run: ``name`` is PREC, ``device_type`` "cpu" or "cuda"."""

    name: str
    device_type: str
    amp_dtype_on_cuda: torch.dtype = torch.float16  # LLaMP: bf16

    @property
    def frozen_dtype(self) -> torch.dtype:
        return _FROZEN.get(self.name, torch.float32)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.name == "fp32":
            return None
        if self.name == "amp":
            return self.amp_dtype_on_cuda if self.device_type == "cuda" else torch.bfloat16
        return _FROZEN[self.name]

    @property
    def cache_dtype(self) -> torch.dtype:
        """LLaMP's knowledge-cache rows as the decoder reads them (a bf16 cache is then never copied to fp32)."""
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    @property
    def deepspeed_bf16(self) -> bool:
        """DeepSpeed's bf16 mode (fp16 never: see the module doc)."""
        return self.name == "bf16"

    @property
    def grad_scaling(self) -> bool:
        """Loss scaling, where fp16 gradients could underflow (fp16 autocast on CUDA)."""
        return self.autocast_dtype == torch.float16 and self.device_type == "cuda"

    def autocast(self):
        """Autocast to ``autocast_dtype`` (so fp32 trained tensors meet half-precision frozen ones)."""
        dtype = self.autocast_dtype
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device_type, dtype=dtype)

    def cast_frozen(self, module: torch.nn.Module) -> None:
        """Frozen weights to ``frozen_dtype`` (half the memory in fp16/bf16); trained ones stay fp32."""
        if self.frozen_dtype != torch.float32:
            for p in module.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(self.frozen_dtype)
