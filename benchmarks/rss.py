"""Peak resident memory of this process, split into what is used and what the kernel could reclaim.

Linux counts memory-mapped file pages (a safetensors checkpoint or knowledge
cache read through mmap) in a process's RSS. Those pages are clean and backed
by the file: under memory pressure the kernel drops them and reads them again
when touched. ``RssAnon`` (heap, tensors) is what the process really holds.
``VmHWM`` is the kernel's own high-water mark of the sum, exact but not split;
the split comes from sampling ``/proc/self/status`` on a thread, so a spike
shorter than the interval can be missed by the samples (never by ``VmHWM``).
"""
from __future__ import annotations

import threading

STATUS = "/proc/self/status"
FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def read_status() -> dict[str, int]:
    """The memory fields of ``/proc/self/status`` in bytes (missing ones as 0)."""
    values = dict.fromkeys(FIELDS, 0)
    with open(STATUS) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0]) * 1024  # reported in kB
    return values


class PeakSampler:
    """Samples this process's memory every ``interval`` seconds; peaks are kept per named phase.

    Per phase: ``anon`` (peak RssAnon: memory in use), ``file`` (peak RssFile:
    reclaimable mapped file pages), ``rss`` (peak VmRSS of the samples) and
    ``vm_hwm`` (the kernel's peak since the process started, read as the phase ends).
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> dict[str, int]:
        status = read_status()
        with self._lock:
            peak = self.peaks.setdefault(self.phase, {"anon": 0, "file": 0, "rss": 0, "vm_hwm": 0})
            peak["anon"] = max(peak["anon"], status["RssAnon"])
            peak["file"] = max(peak["file"], status["RssFile"])
            peak["rss"] = max(peak["rss"], status["VmRSS"])
            peak["vm_hwm"] = status["VmHWM"]
        return status

    def start_phase(self, name: str) -> None:
        """Close the current phase (one last sample) and count what follows under ``name``."""
        self.sample()
        with self._lock:
            self.phase = name
        self.sample()

    def stop(self) -> dict[str, dict[str, int]]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return {phase: dict(p) for phase, p in self.peaks.items()}
