"""Benches in spawned processes, one per method, taking turns under the parent's direction.

Each process holds one bench, so that its memory is that method's alone (a
thread samples it: ``benchmarks/rss.py``). The parent decides when each
computes: the methods of one class count take turns, step by step, so that a
change of machine load hits them alike.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import time

import torch

from benchmarks.real_width_assets import BATCH, THREADS
from benchmarks.real_width_benches import BENCHES
from benchmarks.rss import PeakSampler

WARMUP_STEPS = 2  # the second step is still slower than the later ones


def serve(job: dict, conn) -> None:
    """A worker process: build one method at one class count, then run what the parent asks, one at a time.

    Replies: the build's facts; then per command its seconds (a step: a dict of
    its parts); ``finish`` stops the memory sampler and returns its peaks per
    phase and the checkpoint sizes. An error is sent back as its traceback.
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
                   "trainable_params": trainable})
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
                sampler.start_phase(arg)
                if arg == "eval":
                    bench.eval()
                conn.send(None)
            elif command == "finish":
                memory = sampler.stop()
                conn.send({"memory": memory, "checkpoint_bytes": bench.checkpoint_bytes() if model else None})
                return
            else:
                with torch.no_grad() if command in ("text_features", "eval_batch") else contextlib.nullcontext():
                    start = time.perf_counter()
                    reply = actions[command]()
                    seconds = time.perf_counter() - start
                conn.send(reply if isinstance(reply, dict) or command == "text_parts" else seconds)
    except BaseException:
        import traceback

        conn.send(RuntimeError(f"{job['method']} with {len(job['classnames'])} classes failed:\n"
                               + traceback.format_exc()))


class Worker:
    """A spawned process running ``serve``: its memory is that method's alone, and the parent decides
    when it computes, so that the methods take turns under the same machine load."""

    def __init__(self, job: dict):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(job, child), daemon=True)
        self.process.start()
        self.info = None

    def _reply(self):
        reply = self.conn.recv()
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


def measure_group(jobs: dict[str, dict], steps: int, parts: bool, log) -> list[dict]:
    """Every method of ``jobs`` at one class count, each in its own process, taking turns step by step."""
    workers = {method: Worker(job) for method, job in jobs.items()}  # they build at the same time
    try:
        results = {method: {"method": method, "classes": len(job["classnames"]), **workers[method].built()}
                   for method, job in jobs.items()}
        log("built in " + ", ".join(f"{m} {r['build_s']:.0f} s" for m, r in results.items()))
        trainers = [m for m in workers if m != "ZeroshotCLIP"]
        for method in trainers:
            workers[method].ask("phase", "train")
            for _ in range(WARMUP_STEPS):
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
        if parts and "LLaMP" in workers:
            results["LLaMP"]["parts_s"] = workers["LLaMP"].ask("parts")
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
