"""LLaMP, MaPLe and zero-shot CLIP side by side at real widths on CPU, and how LLaMP's cost grows with classes.

    python benchmarks/real_width.py [--quick] [--classes 12 24 48] [--steps 3] [--json FILE] [--baseline JSON]

Everything has real widths and random weights, fp32 on 2 threads, the same in every model:
  * CLIP ViT-B/16 shapes (text 512 x 12 layers, vision 768 x 12, patch 16, 224 px,
    projection 512), saved once as a Hugging Face folder and loaded by each model
    with ``load_clip``, as the trainers load it;
  * one LLaMA-2-7B-shaped decoder layer (hidden 4096, 32 heads, MLP 11008) and the
    final norm, saved as a one-layer safetensors checkpoint and read with
    ``load_decoder_tail``;
  * a knowledge cache of 48 texture classes x 11 templates x 96 tokens in fp32 (the
    build's default dtype): random keys, values and targets written by
    ``CacheWriter``, opened with ``KnowledgeCache.open`` (with every check the
    trainer makes) and read with ``KVStager``, one random template per step;
  * each method's reference config (LLaMP base2new.yaml, MaPLe vit_b16_base2new.yaml,
    ZeroshotCLIP vit_b16.yaml) with PREC fp32, and its optimiser from Dassl's
    ``build_optimizer`` (trainers.optim: Dassl's, Adam-family fused) over the trainer's parameter groups (LLaMP: AdamW, two
    learning rates, gradient clipping 1.0; MaPLe: SGD);
  * one batch of 4 random images, for training and for evaluation.

Every (method, class count) runs in its own spawned process, so that its memory
is its own; a thread in it samples that memory (``benchmarks/rss.py``: resident
anonymous memory apart from reclaimable file-backed pages). The methods of one
class count are alive together and take turns, step by step, so that a change of
machine load hits them alike. Each runs two warm-up steps (the step after the
first was still 20-30 % slower in every run) and ``--steps`` timed training
steps (two at the other class counts), the forward (with the K/V
read and the losses), backward and optimiser step timed apart (medians); then
one evaluation's text features, and the evaluation of one batch (median of up to
3 after a warm-up). Checkpoint sizes are the bytes ``torch.save`` writes for the
trainable tensors in fp32 alone (the model) and with the optimiser state (what a
resume needs). At 24 classes LLaMP's step is also timed part by part.

Printed (and written to ``--json``): the side-by-side table at 24 classes with the
ratios LLaMP/MaPLe (training step) and LLaMP/zero-shot (evaluation of one batch);
then each measure at every class count, fitted as a + b x classes, extrapolated to
SUN397's (199) and ImageNet's (500) base halves; and the knowledge cache's bytes
per class on disk and on the device. With ``--baseline OLD.json`` (an earlier run's
JSON, e.g. of the code before a change), each target measure then and now and
whether it meets the performance issue's target. Absolute times depend on the CPU and its load
(the load average is printed with them): compare the ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.footprint import real_width_clip, write_real_width_llm  # noqa: E402
from benchmarks.rss import PeakSampler  # noqa: E402
from benchmarks.text_length import DTD_BASE  # noqa: E402

# DTD's 47 texture names (base half first), then one more texture word: every class count reads alike.
CLASSNAMES = DTD_BASE + [
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly",
    "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined",
    "waffled", "woven", "wrinkled", "zigzagged", "corrugated"]
DATASET = "DescribableTextures"  # the zero-shot prompts of DTD, whose class names these are
THREADS, BATCH, NUM_TEMPLATES, CACHE_LENGTH = 2, 4, 11, 96
MAIN_CLASSES = 24
WARMUP_STEPS = 2
EXTRAPOLATE = {"SUN397 base": 199, "ImageNet base": 500}
METHODS = ("LLaMP", "MaPLe", "ZeroshotCLIP")
PART_NAMES = {"llm_decoder": "LLM prompt decoder", "text_tower": "CLIP text tower (prompted)",
              "vision_tower_prompts_lora": "vision tower, prompts and LoRA", "teacher_vision_tower":
              "teacher vision tower (forward only)", "optimiser": "gradient clipping and AdamW"}
GIB, MB = 1024 ** 3, 1e6


# ---------------------------------------------------------------- the models' files (parent process)


def write_assets(folder: str, classnames: list[str]) -> dict[str, str]:
    """CLIP folder, one-layer LLM checkpoint and knowledge cache under ``folder``; their paths by name."""
    from llamp.clip.loading import load_clip

    paths = {name: os.path.join(folder, name) for name in ("clip", "llm", "cache")}
    torch.manual_seed(0)
    real_width_clip().model.save_pretrained(paths["clip"])
    os.makedirs(paths["llm"])
    write_real_width_llm(paths["llm"])
    write_cache(paths["cache"], classnames, paths["llm"], load_clip("ViT-B/16", paths["clip"]))
    return paths


def write_cache(folder: str, classnames: list[str], llm: str, clip) -> None:
    """Random keys/values, masks and targets, written by the build's own writer with what it records."""
    from llamp.knowledge_cache.writer import CacheWriter
    from llamp.llm.identity import llm_identity
    from llamp.llm.weights import llm_layer_sha256

    kept = [llm_identity(llm)["num_hidden_layers"] - 1]
    identity = llm_identity(llm, llm_layer_sha256(llm, kept))
    writer = CacheWriter(folder, {
        "dataset": DATASET, "classnames": classnames, "llm": identity, "kept_layers": kept, "dtype": "float32",
        "query_templates": [f"random template {t}: {{}}" for t in range(NUM_TEMPLATES)], "layout": "contiguous"})
    n, gen = len(classnames), torch.Generator().manual_seed(0)
    shape = (n, identity["num_key_value_heads"], CACHE_LENGTH, identity["head_dim"])
    for t in range(NUM_TEMPLATES):
        lengths = torch.randint(CACHE_LENGTH // 2, CACHE_LENGTH + 1, (n,), generator=gen)
        lengths[0] = CACHE_LENGTH  # the longest row fills the template's padded length
        mask = (torch.arange(CACHE_LENGTH) >= CACHE_LENGTH - lengths[:, None]).long()  # left padding
        kv = {kept[0]: (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))}
        writer.write_template(t, kv, mask, input_sha256=f"random-{t}")
    writer.write_targets(torch.randn(n, clip.model.config.projection_dim, generator=gen), "random-targets",
                         clip={"source": clip.source, "text_sha256": clip.text_sha256()})
    writer.finish()


def cache_bytes(folder: str, class_counts: list[int]) -> dict:
    """Bytes per class of the cache on disk (all templates) and on the device for one step (one template)."""
    from llamp.knowledge_cache.reader import KnowledgeCache
    from llamp.knowledge_cache.staging import KVStager

    cache = KnowledgeCache.open(folder)
    out = {"disk_bytes_per_class": cache.bytes_on_disk() / cache.num_classes, "device_bytes_per_class": {}}
    for dtype in (torch.float32, torch.bfloat16):  # fp32: the CPU trainer; bf16: PREC bf16 on CUDA
        per_class = []
        for n in class_counts:
            kv = KVStager(cache, cache.select(CLASSNAMES[:n]), torch.device("cpu"), dtype).get(0)
            tensors = [*kv.keys, *kv.values, kv.mask]
            per_class.append(sum(t.numel() * t.element_size() for t in tensors) / n)
        out["device_bytes_per_class"][str(dtype).removeprefix("torch.")] = max(per_class)
    return out


# ---------------------------------------------------------------- one method in one process (child)


def reference_cfg(config_file: str, precision_key: str):
    """The method's reference config as train.py reads it, in fp32 (CPU)."""
    from dassl.config import get_cfg_default

    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", config_file))
    cfg.merge_from_list([precision_key, "fp32"])
    return cfg


class _ByteCounter:
    """A write-only file that only counts: checkpoint sizes without holding the bytes."""

    def __init__(self):
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def saved_bytes(obj) -> int:
    sink = _ByteCounter()
    torch.save(obj, sink)
    return sink.bytes


def checkpoint_bytes(model: torch.nn.Module, optim: torch.optim.Optimizer) -> dict[str, int]:
    """What the trainers save: trainable tensors in fp32 (the model), plus the optimiser state (resume)."""
    state = {k: p.detach().float() for k, p in model.named_parameters() if p.requires_grad}
    return {"model": saved_bytes({"state_dict": state}),
            "resume": saved_bytes({"state_dict": state, "optimizer": optim.state_dict()})}


class LLaMPBench:
    """The LLaMP trainer's model, cache reads and optimiser step, without Dassl's loop around them."""

    def __init__(self, job: dict):
        from trainers.optim import build_optimizer

        from llamp.clip.loading import load_clip
        from llamp.knowledge_cache.reader import KnowledgeCache
        from llamp.knowledge_cache.staging import KVStager
        from llamp.llm.tail import load_decoder_tail
        from llamp.model import LLaMPModel
        from trainers.llamp import LLAMP_KEYS, LLaMP

        cfg = reference_cfg("LLaMP/base2new.yaml", "TRAINER.LLAMP.PREC")
        c = cfg.TRAINER.LLAMP
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        tail = load_decoder_tail(job["llm"], c.NUM_DECODER_LAYERS)
        self.cache = KnowledgeCache.open(job["cache"], expected_llm=tail.identity(), num_layers=c.NUM_DECODER_LAYERS,
                                         expected_clip=clip)
        rows = self.cache.select(job["classnames"])
        self.model = LLaMPModel(clip.model, clip.tokenizer, tail, job["classnames"], LLAMP_KEYS.config(c),
                                self.cache.targets(rows))
        self.stager = KVStager(self.cache, rows, torch.device("cpu"), torch.float32)
        # the trainer's own method, on a stand-in for the trainer: the same groups and learning rates
        groups = LLaMP.param_groups(SimpleNamespace(model=self.model, cfg=cfg, trainer_cfg=c))
        self.optim = build_optimizer(self.model, cfg.OPTIM, param_groups=groups)
        self.params = [p for g in self.optim.param_groups for p in g["params"]]
        self.grad_clip = c.GRAD_CLIP
        self.draw = random.Random(0)  # template per step, as the trainer draws it
        self.text_positions = int(self.model.prompts.input_ids.shape[1])
        self.model.train()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        start = time.perf_counter()
        kv = self.stager.get(self.draw.randrange(self.cache.num_templates))
        read = time.perf_counter()
        losses, _ = self.model.losses(images, labels, kv)
        del kv  # as the trainer does: not kept through the backward
        loss = sum(losses.values())
        forward = time.perf_counter()
        self.optim.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)  # as the trainers do: no gradients held beside the next forward
        end = time.perf_counter()
        return {"forward": forward - start, "kv_read": read - start, "backward": backward - forward,
                "optimiser": end - backward}

    def parts(self, images: torch.Tensor) -> dict[str, float]:
        """Forward + backward of each part of a step on its own (no optimiser step): where the time goes."""
        kv = self.stager.get(0)
        runs = {
            "llm_decoder": lambda: self.model.decoder(kv),
            "decoder_and_text_tower": lambda: self.model.text_features(kv),
            "vision_tower_prompts_lora": lambda: self.model.image_features(images),
        }
        out = {}
        for name, run in runs.items():
            start = time.perf_counter()
            run().float().sum().backward()
            out[name] = time.perf_counter() - start
        self.optim.zero_grad()
        out["text_tower"] = out.pop("decoder_and_text_tower") - out["llm_decoder"]
        start = time.perf_counter()
        self.model.teacher_image_features(images)
        out["teacher_vision_tower"] = time.perf_counter() - start
        return out

    def eval(self) -> None:
        self.model.eval()

    def text_features(self) -> None:
        """Every template's text features, as the trainer computes them once per evaluation (the seconds
        spent in the LLM prompt decoder kept apart in ``text_parts``)."""
        marks = []
        decoder = self.model.decoder
        hooks = [decoder.register_forward_pre_hook(lambda *_: marks.append(-time.perf_counter())),
                 decoder.register_forward_hook(lambda *_: marks.append(time.perf_counter()))]
        start = time.perf_counter()
        features = []
        for t in range(self.cache.num_templates):
            features.append(F.normalize(self.model.text_features(self.stager.get(t)).float(), dim=-1))
        self.text = torch.stack(features)  # [T, C, embed]
        total = time.perf_counter() - start
        for hook in hooks:
            hook.remove()
        self.text_parts = {"llm_decoder": sum(marks), "rest": total - sum(marks)}

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.class_probabilities(images, self.text)

    def checkpoint_bytes(self) -> dict[str, int]:
        return checkpoint_bytes(self.model, self.optim)


class MaPLeBench:
    """The MaPLe trainer's prompt learner and optimiser (PromptLearningTrainer's step)."""

    def __init__(self, job: dict):
        from trainers.optim import build_optimizer

        from llamp.clip.loading import load_clip
        from trainers.maple import MaPLe

        cfg = reference_cfg("MaPLe/vit_b16_base2new.yaml", "TRAINER.MAPLE.PREC")
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.model = MaPLe.build_prompt_learner(SimpleNamespace(trainer_cfg=cfg.TRAINER.MAPLE), clip,
                                                job["classnames"])
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = build_optimizer(self.model, cfg.OPTIM, param_groups=[{"params": trainable}])
        self.text_positions = int(self.model.prompts.input_ids.shape[1])
        self.model.train()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        start = time.perf_counter()
        losses, _ = self.model.losses(images, labels)
        loss = sum(losses.values())
        forward = time.perf_counter()
        self.optim.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        end = time.perf_counter()
        return {"forward": forward - start, "backward": backward - forward, "optimiser": end - backward}

    def eval(self) -> None:
        self.model.eval()

    def text_features(self) -> None:
        self.text = self.model.text_features()  # MaPLe's forward computes these again for every batch

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def checkpoint_bytes(self) -> dict[str, int]:
        return checkpoint_bytes(self.model, self.optim)


class ZeroShotBench:
    """Zero-shot CLIP as its trainer evaluates: text features once, then image features per batch."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from llamp.clip.tokenizer import CONTEXT_LENGTH
        from llamp.templates import class_prompt_name, zero_shot_templates

        cfg = reference_cfg("ZeroshotCLIP/vit_b16.yaml", "TRAINER.ZEROSHOTCLIP.PREC")
        self.clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.templates = zero_shot_templates(DATASET, cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE)
        self.names = [class_prompt_name(c) for c in job["classnames"]]
        self.text_positions = CONTEXT_LENGTH

    def eval(self) -> None:
        pass

    def text_features(self) -> None:
        """As ZeroshotCLIP.build_model: the mean of the templates' normalised features, renormalised."""
        per_template = [F.normalize(self.clip.encode_text([t.format(c) for c in self.names]).float(), dim=-1)
                        for t in self.templates]
        self.text = F.normalize(torch.stack(per_template).mean(0), dim=-1)

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        from trainers.zsclip import ZeroshotCLIP

        trainer = SimpleNamespace(clip=self.clip.model, weight_dtype=torch.float32,
                                  autocast=contextlib.nullcontext, text_features=self.text)
        return ZeroshotCLIP.model_inference(trainer, images)  # the trainer's own method, on a stand-in


BENCHES = {"LLaMP": LLaMPBench, "MaPLe": MaPLeBench, "ZeroshotCLIP": ZeroShotBench}


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
            parts = worker.ask("text_parts")
            if parts:
                results[method]["text_features_parts_s"] = parts
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


# ---------------------------------------------------------------- summary (parent process)


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(intercept, per_class)`` of ``value = intercept + per_class * classes``."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def training_memory(r: dict) -> dict[str, int]:
    """Peaks while building and training (sampled anon and file pages; the kernel's VmHWM at the end)."""
    phases = [r["memory"][p] for p in ("build", "train") if p in r["memory"]]
    return {"anon": max(p["anon"] for p in phases), "file": max(p["file"] for p in phases),
            "vm_hwm": phases[-1]["vm_hwm"]}


def whole_run_memory(r: dict) -> dict[str, int]:
    phases = [r["memory"][p] for p in ("build", "train", "eval") if p in r["memory"]]
    return {"anon": max(p["anon"] for p in phases), "file": max(p["file"] for p in phases),
            "vm_hwm": phases[-1]["vm_hwm"]}


def scaling_rows(results: dict) -> dict[str, dict]:
    """Per measure: its value at each class count, the fitted line and extrapolations."""
    measures = {
        "LLaMP training step (s)": ("LLaMP", lambda r: r["step_s"]["total"]),
        "MaPLe training step (s)": ("MaPLe", lambda r: r["step_s"]["total"]),
        "LLaMP text features, one evaluation (s)": ("LLaMP", lambda r: r["text_features_s"]),
        "LLaMP evaluation of one batch (s)": ("LLaMP", lambda r: r["eval_batch_s"]),
        "MaPLe evaluation of one batch (s)": ("MaPLe", lambda r: r["eval_batch_s"]),
        "LLaMP peak resident anon, training (GiB)": ("LLaMP", lambda r: training_memory(r)["anon"] / GIB),
        "LLaMP peak file-backed, with evaluation (GiB)": ("LLaMP", lambda r: whole_run_memory(r)["file"] / GIB),
    }
    rows = {}
    for name, (method, value) in measures.items():
        points = sorted((n, value(r)) for (m, n), r in results.items() if m == method)
        if len(points) < 2:
            continue
        intercept, per_class = fit_line(points)
        rows[name] = {"at": {str(n): v for n, v in points}, "intercept": intercept, "per_class": per_class,
                      "extrapolated": {label: intercept + per_class * n for label, n in EXTRAPOLATE.items()}}
    return rows


def uptime_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def print_report(report: dict) -> None:
    results = {(r["method"], r["classes"]): r for r in report["runs"]}
    n = report["main_classes"]
    llamp, maple, zs = (results.get((m, n)) for m in METHODS)
    print(f"\nReal widths on CPU, fp32, {THREADS} threads: CLIP ViT-B/16, one LLaMA-2-7B-shaped decoder layer, "
          f"{NUM_TEMPLATES} templates x {CACHE_LENGTH} cached tokens, batch {BATCH}, random weights")
    print(f"torch {torch.__version__}; {report['load_before']} at start, {report['load_after']} at the end; "
          f"{report['wall_s']:.0f} s in all\n")

    def cell(r, fn, fmt="{:.2f}"):
        if r is None:
            return "-"
        try:
            return fmt.format(fn(r))
        except (KeyError, TypeError):
            return "-"

    rows = [
        ("training step, median (s)", lambda r: r["step_s"]["total"]),
        ("  forward, with losses (s)", lambda r: r["step_s"]["forward"]),
        ("    of which K/V read (s)", lambda r: r["step_s"]["kv_read"]),
        ("  backward (s)", lambda r: r["step_s"]["backward"]),
        ("  optimiser step (s)", lambda r: r["step_s"]["optimiser"]),
        ("text features, one evaluation (s)", lambda r: r["text_features_s"]),
        ("  of which LLM prompt decoder (s)", lambda r: r["text_features_parts_s"]["llm_decoder"]),
        (f"evaluation of one batch of {BATCH} (s)", lambda r: r["eval_batch_s"]),
        ("text tower positions per class", lambda r: r["text_positions"]),
        ("trainable parameters (M)", lambda r: r["trainable_params"] / 1e6),
        ("peak resident anonymous, building (GiB)", lambda r: r["memory"]["build"]["anon"] / GIB),
        ("peak RSS while training (GiB)", lambda r: training_memory(r)["vm_hwm"] / GIB),
        ("  resident anonymous (in use)", lambda r: training_memory(r)["anon"] / GIB),
        ("  file-backed (reclaimable)", lambda r: training_memory(r)["file"] / GIB),
        ("peak RSS with evaluation (GiB)", lambda r: whole_run_memory(r)["vm_hwm"] / GIB),
        ("  resident anonymous (in use)", lambda r: whole_run_memory(r)["anon"] / GIB),
        ("  file-backed (reclaimable)", lambda r: whole_run_memory(r)["file"] / GIB),
        ("checkpoint, model (MB)", lambda r: r["checkpoint_bytes"]["model"] / MB),
        ("checkpoint, resume state (MB)", lambda r: r["checkpoint_bytes"]["resume"] / MB),
    ]
    print(f"{n} classes{'':27s}{'LLaMP':>10s}{'MaPLe':>10s}{'zero-shot':>11s}")
    for label, fn in rows:
        fmt = "{:.0f}" if "positions" in label else "{:.3f}" if "K/V" in label else "{:.2f}"
        print(f"{label:37s}{cell(llamp, fn, fmt):>10s}{cell(maple, fn, fmt):>10s}{cell(zs, fn, fmt):>11s}")
    print(f"(text features: LLaMP all {NUM_TEMPLATES} templates once per evaluation; MaPLe one pass, which its "
          "forward repeats for every batch; zero-shot once per run)")
    for label, value in report["ratios"].items():
        print(f"{label:58s}{value:6.2f}x")
    if llamp and "parts_s" in llamp:
        parts = {**llamp["parts_s"], "optimiser": llamp["step_s"]["optimiser"]}
        total = sum(parts.values())
        print(f"LLaMP's step part by part ({n} classes; each part's forward + backward timed alone):")
        for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {PART_NAMES[name]:35s}{seconds:7.2f} s {100 * seconds / total:4.0f}%")
    if report.get("baseline"):
        print_baseline(report["baseline"])

    rows = report["scaling"]
    if rows:
        counts = sorted({int(c) for row in rows.values() for c in row["at"]})
        print(f"\nScaling with classes{'':27s}" + "".join(f"{c:>8d}" for c in counts)
              + f"{'per class':>11s}{'fixed':>8s}" + "".join(f"{n:>8d}" for n in EXTRAPOLATE.values()))
        for name, row in rows.items():
            values = "".join(f"{row['at'][str(c)]:8.2f}" if str(c) in row["at"] else f"{'-':>8s}" for c in counts)
            extra = "".join(f"{v:8.2f}" for v in row["extrapolated"].values())
            print(f"{name:47s}{values}{row['per_class']:11.4f}{row['intercept']:8.2f}{extra}")
        print(f"(columns {', '.join(str(n) for n in EXTRAPOLATE.values())}: the fitted line extrapolated to "
              f"{' and '.join(EXTRAPOLATE)}; text tower positions LLaMP "
              + ", ".join(f"{results[('LLaMP', c)]['text_positions']}" for c in counts if ("LLaMP", c) in results)
              + ", MaPLe 77)")
        steps = [rows.get(f"{m} training step (s)") for m in ("LLaMP", "MaPLe")]
        if all(steps):
            print("LLaMP / MaPLe, training step on the fitted lines: " + ", ".join(
                f"{label} {steps[0]['extrapolated'][label] / steps[1]['extrapolated'][label]:.2f}x"
                for label in EXTRAPOLATE) + f"; per class alone {steps[0]['per_class'] / steps[1]['per_class']:.2f}x")
    cache = report["cache"]
    device = cache["device_bytes_per_class"]
    print(f"\nKnowledge cache per class: {cache['disk_bytes_per_class'] / MB:.1f} MB on disk ({NUM_TEMPLATES} "
          f"templates, fp32); on the device for one step or one template of an evaluation "
          f"{device['float32'] / MB:.2f} MB in fp32 (CPU), {device['bfloat16'] / MB:.2f} MB in bf16 "
          "(PREC bf16 on CUDA)")
    for label, classes in EXTRAPOLATE.items():
        print(f"  {label} ({classes} classes): {classes * cache['disk_bytes_per_class'] / 1e9:.1f} GB on disk, "
              f"{classes * device['bfloat16'] / 1e9:.2f} GB of K/V per step on the GPU in bf16")
    print("GPU rows (bf16 DeepSpeed step time and peak GPU memory at 24 and 500 classes): not yet measured")


# What the performance issue asked of LLaMP at the main class count: (label, value, target, target is a ratio
# to the baseline run (else an absolute bound)).
TARGETS = [
    ("LLaMP / MaPLe, training step", lambda rep, r: rep["ratios"]["LLaMP / MaPLe, training step"], 1.5, False),
    ("LLaMP training step (s)", lambda rep, r: r["step_s"]["total"], None, True),
    ("LLaMP text features, one evaluation (s)", lambda rep, r: r["text_features_s"], 0.5, True),
    ("LLaMP peak RSS while training (GiB)", lambda rep, r: training_memory(r)["vm_hwm"] / GIB, 0.8, True),
    ("LLaMP peak RSS with evaluation (GiB)", lambda rep, r: whole_run_memory(r)["vm_hwm"] / GIB, 0.8, True),
    ("LLaMP peak resident anonymous (GiB)", lambda rep, r: whole_run_memory(r)["anon"] / GIB, None, True),
]


def compare_with_baseline(report: dict, baseline: dict, label: str) -> dict:
    """Each target measure in ``baseline`` (an earlier run's JSON) and now, at the main class count."""
    def main_llamp(rep):
        return next(r for r in rep["runs"] if r["method"] == "LLaMP" and r["classes"] == rep["main_classes"])

    then, now = main_llamp(baseline), main_llamp(report)
    rows = []
    for name, value, target, relative in TARGETS:
        before, after = value(baseline, then), value(report, now)
        met = None if target is None else (after / before if relative else after) <= target
        rows.append({"measure": name, "baseline": before, "now": after, "ratio": after / before,
                     "target": None if target is None else (f"<= {target}x baseline" if relative else f"<= {target}"),
                     "met": met})
    return {"file": label, "load": baseline.get("load_before"), "rows": rows}


def print_baseline(comparison: dict) -> None:
    print(f"\nAgainst the baseline run {comparison['file']} (its {comparison['load']} at start):")
    print(f"{'':42s}{'baseline':>10s}{'now':>9s}{'now/base':>10s}  target")
    for row in comparison["rows"]:
        verdict = "" if row["met"] is None else ("met" if row["met"] else "NOT met")
        print(f"{row['measure']:42s}{row['baseline']:10.2f}{row['now']:9.2f}{row['ratio']:9.2f}x  "
              f"{row['target'] or '':22s}{verdict}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="development run: 12 and 24 classes, 1 timed step")
    parser.add_argument("--classes", type=int, nargs="+", help="class counts (default 12 24 48)")
    parser.add_argument("--steps", type=int, help=f"timed training steps after {WARMUP_STEPS} warm-up steps at "
                        f"{MAIN_CLASSES} classes (default 5; at most 2 at the other class counts)")
    parser.add_argument("--no-parts", action="store_true", help="skip timing LLaMP's step part by part")
    parser.add_argument("--baseline", metavar="JSON", help="an earlier run's JSON (e.g. before a change, on the "
                        "same machine): prints each target measure then and now")
    parser.add_argument("--json", default=os.path.join(REPO, "output", "benchmarks", "real_width.json"),
                        help="where to write the results (default: output/benchmarks/real_width.json)")
    args = parser.parse_args(argv)
    classes = sorted(set(args.classes or ([12, 24] if args.quick else [12, 24, 48])))
    if not 1 <= min(classes) <= max(classes) <= len(CLASSNAMES):
        parser.error(f"--classes must lie in 1..{len(CLASSNAMES)}")
    steps = args.steps or (1 if args.quick else 5)
    steps_others = max(1, min(2, steps - 1))
    main_classes = MAIN_CLASSES if MAIN_CLASSES in classes else classes[len(classes) // 2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), uptime_line()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    # The main class count first, all three methods; then LLaMP and MaPLe at each other count.
    groups = [(main_classes, METHODS)] + [(n, METHODS[:2]) for n in classes if n != main_classes]
    runs = []
    with tempfile.TemporaryDirectory(prefix="llamp-real-width-") as work:
        log("writing the CLIP folder, the one-layer LLM checkpoint and the knowledge cache")
        paths = write_assets(work, CLASSNAMES[:max(classes)])
        cache = cache_bytes(paths["cache"], classes)
        for n, methods in groups:
            log(f"{', '.join(methods)} with {n} classes ({uptime_line()})")
            jobs = {m: {**paths, "method": m, "classnames": CLASSNAMES[:n]} for m in methods}
            runs += measure_group(jobs, steps if n == main_classes else steps_others,
                                  parts=n == main_classes and not args.no_parts, log=log)

    results = {(r["method"], r["classes"]): r for r in runs}
    llamp, maple, zs = (results.get((m, main_classes)) for m in METHODS)
    report = {
        "setup": {"threads": THREADS, "batch": BATCH, "templates": NUM_TEMPLATES, "cache_length": CACHE_LENGTH,
                  "dtype": "float32", "steps_main": steps, "steps_others": steps_others, "warmup_steps": WARMUP_STEPS,
                  "torch": torch.__version__},
        "main_classes": main_classes, "load_before": load_before, "load_after": uptime_line(),
        "wall_s": time.perf_counter() - started, "runs": runs, "cache": cache,
        "ratios": {
            "LLaMP / MaPLe, training step": llamp["step_s"]["total"] / maple["step_s"]["total"],
            "LLaMP / zero-shot, evaluation of one batch": llamp["eval_batch_s"] / zs["eval_batch_s"],
            "LLaMP / zero-shot, text features of one evaluation": llamp["text_features_s"] / zs["text_features_s"],
        },
        "scaling": scaling_rows(results),
    }
    if args.baseline:
        with open(args.baseline) as f:
            report["baseline"] = compare_with_baseline(report, json.load(f), args.baseline)
    print_report(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {os.path.abspath(args.json)}")
    return report


if __name__ == "__main__":
    main()
