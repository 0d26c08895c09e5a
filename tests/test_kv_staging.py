"""The background path that stages K/V for the GPU returns exactly the rows of a direct read."""
import torch

from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.knowledge_cache.staging import KVStager


def test_staged_rows_equal_the_direct_read(synthetic_cache):
    cache = KnowledgeCache.open(synthetic_cache["cache"])
    rows = cache.select([cache.classnames[i] for i in (5, 0, 7, 3)])  # any order, as base/new selections are
    stager = KVStager(cache, rows, torch.device("cpu"), torch.float32, background=True, pin=False)
    try:
        order = [2, 0, 0, cache.num_templates - 1, 1]
        for now, ahead in zip(order, order[1:] + [None]):
            staged = stager.get(now)
            if ahead is not None:
                stager.prefetch(ahead)
                assert ahead in stager._pending  # read on the background thread
            direct = cache.kv(now, rows, dtype=torch.float32)
            assert torch.equal(staged.mask, direct.mask)
            for k, v, dk, dv in zip(staged.keys, staged.values, direct.keys, direct.values):
                assert torch.equal(k, dk) and torch.equal(v, dv)
            assert staged.keys[0].shape[0] == len(rows)
    finally:
        stager.close()
