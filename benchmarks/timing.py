"""Median wall-clock seconds of a call repeated, after uncounted warm-up calls."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(run: Callable[[], object], steps: int, warmup: int = 0) -> float:
    """``run`` called ``warmup + steps`` times; the median seconds of the last ``steps`` calls."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        run()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
