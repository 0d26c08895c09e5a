"""Moving one template's cached keys/values to the device while the previous one computes.

A step (or an evaluation) needs one query template's K/V rows for its classes.
On CUDA, ``KVStager`` reads the next template's rows from the cache files
straight into pinned host memory on a background thread while the current
step runs, then copies them with ``non_blocking``. PyTorch's caching host
allocator recycles freed pinned blocks, so after the first steps each read
lands in a reused staging buffer, not a new pinned allocation. On CPU it is a
plain read: no thread, no pinning, nothing extra.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..cache_kv import CacheKV
from .reader import KnowledgeCache


class KVStager:
    """``get(t)``: template ``t``'s K/V for ``rows`` on ``device``; ``prefetch(t)`` starts reading it ahead.

    ``background`` and ``pin`` default to on with CUDA and off without; both can
    be forced (the tests run the background path on CPU with pinning off).
    """

    def __init__(self, cache: KnowledgeCache, rows: torch.Tensor, device: torch.device, dtype: torch.dtype,
                 background: bool | None = None, pin: bool | None = None):
        self.cache, self.rows, self.device, self.dtype = cache, rows, torch.device(device), dtype
        on_cuda = self.device.type == "cuda"
        self.pin = on_cuda if pin is None else pin
        use_thread = on_cuda if background is None else background
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-prefetch") if use_thread else None
        self._pending: dict[int, Future] = {}
        self._read_lock = threading.Lock()  # one reader at a time: the cache's open files and masks are shared

    def _read_host(self, template: int) -> CacheKV:
        """The rows in host memory (pinned if asked), in the compute dtype."""
        with self._read_lock:
            return self.cache.kv(template, self.rows, dtype=self.dtype, pin=self.pin)

    def prefetch(self, template: int) -> None:
        """Start reading ``template`` in the background (a no-op without a background thread)."""
        if self._pool is not None and template not in self._pending:
            self._pending[template] = self._pool.submit(self._read_host, template)

    def get(self, template: int) -> CacheKV:
        """Template ``template``'s K/V and mask on the device (waits for a prefetch of it, if one runs)."""
        pending = self._pending.pop(template, None)
        kv = pending.result() if pending is not None else self._read_host(template)
        if self.device.type == "cpu":
            return kv
        return kv.to(self.device, non_blocking=self.pin)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()
