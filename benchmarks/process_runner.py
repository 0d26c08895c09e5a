"""Benches in spawned processes, one per (method, precision), taking turns under the parent's direction.

Each process holds one bench, so that its memory is that method's alone (a
thread samples it: ``benchmarks/rss.py``). The parent decides when each
computes: the jobs of one group (one class count) take turns, step by step, so
that a change of machine load hits them alike.

Memory per phase (build, train, eval): the peak of resident anonymous memory
(``RssAnon``: tensors, heap, PyTorch itself; not the file-backed pages of
mapped files and libraries, which the kernel can drop and read again), the
peak of file-backed pages, and the kernel's VmHWM. Before the train and eval
phases the worker hands the heap's free pages back to the kernel
(``malloc_trim``), so that a phase's peak is what that phase holds, not what
the allocator kept from the one before; the resident anonymous memory just
after that is recorded as the phase's ``start_anon``.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import statistics
import time

import torch

from benchmarks.real_width_assets import BATCH, THREADS
from benchmarks.real_width_benches import BENCHES
from benchmarks.rss import PeakSampler

WARMUP_STEPS = 2  # the second step is still slower than the later ones


def release_free_heap() -> None:
    """Return glibc's free heap pages to the kernel (no-op where there is no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def serve(job: dict, conn) -> None:
    """A worker process: build one method at one class count, then run what the parent asks, one at a time.

    Replies: the build's facts; then per command its seconds (a step: a dict of
    its parts); ``finish`` stops the memory sampler and returns its peaks per
    phase, the anonymous memory at the start of each phase, the checkpoint
    sizes and the model's bytes (``memory_bytes``). An error is sent back as its traceback.
    """
    try:
        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        sampler = PeakSampler()
        gen = torch.Generator().manual_seed(1)
        images = torch.randn(BATCH, 3, 224, 224, generator=gen)  # the same batch in every process
        labels = torch.arange(BATCH) % len(job["classnames"])
        sampler.start_phase("build")
        start = time.perf_counter()
        bench = BENCHES[job["method"]](job)
        model = getattr(bench, "model", None)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if model else None
        conn.send({"build_s": time.perf_counter() - start, "text_positions": bench.text_positions,
                   "trainable_params": trainable, "templates": getattr(bench, "num_templates", None)})
        phase_start = {}
        actions = {
            "step": lambda: bench.step(images, labels),
            "parts": lambda: bench.parts(images),
            "text_parts": lambda: getattr(bench, "text_parts", None),
            "text_features": bench.text_features,
            "eval_batch": lambda: bench.eval_batch(images),
        }
        while True:
            command, arg = conn.recv()
            if command == "phase":  # the memory peaks that follow count under this name
                if arg == "eval":
                    bench.eval()
                release_free_heap()
                sampler.start_phase(arg)
                phase_start[arg] = sampler.sample()["RssAnon"]
                conn.send(None)
            elif command == "finish":
                memory = sampler.stop()
                for phase, anon in phase_start.items():
                    memory[phase]["start_anon"] = anon
                conn.send({"memory": memory, "checkpoint_bytes": bench.checkpoint_bytes() if model else None,
                           "model_bytes": bench.memory_bytes() if model else None})
                return
            else:
                with torch.no_grad() if command in ("text_features", "eval_batch") else contextlib.nullcontext():
                    start = time.perf_counter()
                    reply = actions[command]()
                    seconds = time.perf_counter() - start
                conn.send(reply if isinstance(reply, dict) or command == "text_parts" else seconds)
    except BaseException:
        import traceback

        conn.send(RuntimeError(f"{job_label(job)} with {len(job['classnames'])} classes failed:\n"
                               + traceback.format_exc()))


def job_label(job: dict) -> str:
    return f"{job['method']} {job.get('prec', 'fp32')}"


class Worker:
    """A spawned process running ``serve``: its memory is that method's alone, and the parent decides
    when it computes, so that the methods take turns under the same machine load."""

    def __init__(self, job: dict):
        self.label = f"{job_label(job)} with {len(job['classnames'])} classes"
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(job, child), daemon=True)
        self.process.start()
        self.info = None

    def _reply(self):
        try:
            reply = self.conn.recv()
        except EOFError:  # the process ended without a reply: killed (out of memory?) or crashed
            self.process.join(5)
            raise RuntimeError(f"{self.label}: its process ended with exit code {self.process.exitcode} "
                               "(-9: killed, e.g. by the kernel for memory)") from None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def built(self) -> dict:
        if self.info is None:
            self.info = self._reply()
        return self.info

    def ask(self, command: str, arg=None):
        self.conn.send((command, arg))
        return self._reply()

    def finish(self) -> dict:
        result = self.ask("finish")
        self.process.join()
        return result


def measure_group(jobs: list[dict], steps: int, parts: bool, log, warmup: int = WARMUP_STEPS) -> list[dict]:
    """Every job (a method at one precision and class count) in its own process, taking turns step by step:
    ``warmup`` untimed steps each, then ``steps`` timed ones, then one evaluation's text features and the
    evaluation of a batch; ``parts``: LLaMP's step part by part too."""
    jobs = {job_label(job): job for job in jobs}
    workers = {label: Worker(job) for label, job in jobs.items()}  # they build at the same time
    try:
        results = {label: {"method": job["method"], "prec": job.get("prec", "fp32"),
                           "classes": len(job["classnames"]), **workers[label].built()}
                   for label, job in jobs.items()}
        log("built in " + ", ".join(f"{m} {r['build_s']:.0f} s" for m, r in results.items()))
        trainers = [m for m in workers if jobs[m]["method"] != "ZeroshotCLIP"]
        for method in trainers:
            workers[method].ask("phase", "train")
            for _ in range(warmup):
                workers[method].ask("step")
        timed = {method: [] for method in trainers}
        for i in range(steps):
            order = trainers if i % 2 == 0 else trainers[::-1]  # neither always goes first
            for method in order:
                timed[method].append(workers[method].ask("step"))
        for method, splits in timed.items():
            totals = [s["forward"] + s["backward"] + s["optimiser"] for s in splits]
            results[method]["step_s"] = {part: statistics.median(s[part] for s in splits) for part in splits[0]}
            results[method]["step_s"].update(total=statistics.median(totals), each=totals)
        for label in workers:
            if parts and jobs[label]["method"] == "LLaMP":
                results[label]["parts_s"] = workers[label].ask("parts")
        log("step " + ", ".join(f"{m} {results[m]['step_s']['total']:.1f} s" for m in trainers))
        for method, worker in workers.items():
            worker.ask("phase", "eval")
            results[method]["text_features_s"] = worker.ask("text_features")  # once per evaluation
            text_parts = worker.ask("text_parts")
            if text_parts:
                results[method]["text_features_parts_s"] = text_parts
            worker.ask("eval_batch")  # warm-up
        batches = {method: [] for method in workers}
        for i in range(max(1, min(steps, 3))):
            for method in (list(workers) if i % 2 == 0 else list(workers)[::-1]):
                batches[method].append(workers[method].ask("eval_batch"))
        for method, worker in workers.items():
            results[method]["eval_batch_s"] = statistics.median(batches[method])
            results[method].update(worker.finish())
        return list(results.values())
    finally:
        for worker in workers.values():
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
