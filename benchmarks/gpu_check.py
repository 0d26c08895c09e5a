"""The CUDA path in one short run: LLaMP's bf16 DeepSpeed step and evaluation at real widths, MaPLe beside it.

    bash benchmarks/gpu_check.sh           # one CUDA GPU, a few minutes: the rows of the README's GPU table
    bash benchmarks/gpu_check.sh --tiny    # the tiny models on CPU (CI runs this so that the script cannot rot;
                                           # its figures mean nothing)

Random weights at CLIP ViT-B/16 and LLaMA-2-7B widths (benchmarks/real_width_assets.py: one decoder layer, as
the prompt decoder reads) and a knowledge cache of one query template in bf16, as ``python -m llm_prompts build
--dtype bfloat16`` writes it; each method's reference config (the demo configs with --tiny); a batch of
random images. Each case runs in its own process, built with the trainers' own functions:

  * loss check: LLaMP's first step in bf16 under DeepSpeed against fp32 on the same weights and batch (the
    tests' bound: relative difference of the total loss at most LOSS_REL_TOL);
  * LLaMP, PREC bf16 under DeepSpeed (ZeRO-2 per configs/deepspeed/zero2_bf16.json): training step seconds
    (median of STEPS after a warm-up) and peak memory, at each class count; the evaluation's text features for
    one template (a full evaluation computes 11), seconds and peak memory;
  * MaPLe, PREC bf16 (its trainer: frozen CLIP in bf16, autocast), the same.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors; the caching allocator reserves a little
more), reset before each phase; on CPU the process's peak resident anonymous memory (benchmarks/rss.py).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

LOSS_REL_TOL = 0.05  # as tests/test_bf16.py
STEPS = 3
BATCH = 4
GIB = 2 ** 30


def config(method: str, tiny: bool, prec: str):
    """The method's reference config (demo config with ``tiny``) as train.py reads it, with PREC ``prec``."""
    from dassl.config import get_cfg_default

    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    name = "demo.yaml" if tiny else {"LLaMP": "base2new.yaml", "MaPLe": "vit_b16_base2new.yaml"}[method]
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", method, name))
    cfg.TRAINER.NAME = method
    cfg.TRAINER[method.upper()].PREC = prec
    return cfg


class Meter:
    """Seconds and peak memory of a phase, on CUDA or CPU."""

    def __init__(self, device):
        import torch

        from benchmarks.rss import PeakSampler

        self.device, self.torch = device, torch
        self.sampler = PeakSampler() if device.type == "cpu" else None

    def __call__(self, name: str, run, repeat: int = 1, warmup: int = 0) -> dict:
        torch = self.torch
        for _ in range(warmup):
            run()
        if self.sampler is not None:
            self.sampler.start_phase(name)
        else:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times, out = [], None
        for _ in range(repeat):
            start = time.perf_counter()
            out = run()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        if self.sampler is not None:
            self.sampler.start_phase("after " + name)
            peak = self.sampler.peaks[name]["anon"]
        else:
            peak = torch.cuda.max_memory_allocated()
        # (a number only: tensors would go back to the parent process through shared memory)
        return {"s": statistics.median(times), "peak_gib": peak / GIB, "out": out if isinstance(out, float) else None}


def llamp_case(job: dict) -> dict:
    """LLaMP built as its trainer builds it; steps (DeepSpeed in bf16, plain PyTorch in fp32) and text features."""
    import torch

    from llamp.clip.loading import load_clip
    from llamp.knowledge_cache.reader import KnowledgeCache
    from llamp.knowledge_cache.staging import KVStager
    from llamp.llm.tail import load_decoder_tail
    from llamp.model import LLaMPModel
    from trainers.distributed import DeepSpeedRunner
    from trainers.llamp import LLAMP_KEYS, param_groups
    from trainers.optim import build_optimizer, optimizer_step
    from trainers.precision import Precision

    device = torch.device(job["device"])
    cfg = config("LLaMP", job["tiny"], job["prec"])
    c = cfg.TRAINER.LLAMP
    c.DEEPSPEED, cfg.USE_CUDA = job["prec"] == "bf16", device.type == "cuda"
    dtypes = Precision(job["prec"], device.type, torch.bfloat16)
    torch.manual_seed(0)
    clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
    tail = load_decoder_tail(job["llm"], c.NUM_DECODER_LAYERS)
    cache = KnowledgeCache.open(job["cache"], expected_llm=tail.identity(), num_layers=c.NUM_DECODER_LAYERS,
                                expected_clip=clip)
    rows = cache.select(job["classnames"])
    model = LLaMPModel(clip.model, clip.tokenizer, tail, job["classnames"], LLAMP_KEYS.config(c),
                       cache.targets(rows)).to(device)
    dtypes.cast_frozen(model)
    optim = build_optimizer(model, cfg.OPTIM, param_groups=param_groups(model, cfg.OPTIM.LR, c.LORA_LR))
    runner = DeepSpeedRunner.maybe_create(cfg, model, optim, dtypes.deepspeed_bf16) if c.DEEPSPEED else None
    if runner is not None:
        model.clamp_parameter = runner.clamp_parameter_
    stager = KVStager(cache, rows, device, dtypes.cache_dtype)
    images, labels = batch(clip, len(job["classnames"]), device)
    meter = Meter(device)

    def step():
        kv = stager.get(0)
        with dtypes.autocast():
            losses, _ = model.losses(images, labels, kv)
        del kv
        loss = sum(losses.values())
        if runner is not None:
            runner.backward_and_step(loss)
        else:
            optimizer_step(loss, optim, c.GRAD_CLIP)
        return loss.item()

    out = {"first_loss": meter("first step", step)["out"]}  # the loss check: the same weights and batch
    if job["loss_only"]:
        return out
    out["step"] = meter("step", step, repeat=STEPS)
    model.eval()

    @torch.no_grad()
    def text_features():
        with dtypes.autocast():
            return model.template_text_features([stager.get(0)])

    out["text_features"] = meter("text features", text_features, warmup=1)
    return out


def maple_case(job: dict) -> dict:
    """MaPLe built as its trainer builds it (PromptLearningTrainer), bf16 steps and text features."""
    import torch

    from llamp.clip.loading import load_clip
    from trainers.maple import build_maple
    from trainers.optim import optimizer_step
    from trainers.precision import Precision
    from trainers.prompt_trainer import build_prompt_optimizer

    device = torch.device(job["device"])
    cfg = config("MaPLe", job["tiny"], job["prec"])
    dtypes = Precision(job["prec"], device.type)
    torch.manual_seed(0)
    clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
    model = build_maple(clip, job["classnames"], cfg.TRAINER.MAPLE).to(device)
    dtypes.cast_frozen(model)
    optim = build_prompt_optimizer(model, cfg.OPTIM)
    images, labels = batch(clip, len(job["classnames"]), device)
    meter = Meter(device)

    def step():
        with dtypes.autocast():
            losses, _ = model.losses(images, labels)
        optimizer_step(sum(losses.values()), optim)

    out = {"step": meter("step", step, repeat=STEPS, warmup=1)}
    model.eval()

    @torch.no_grad()
    def text_features():
        with dtypes.autocast():
            return model.text_features()

    out["text_features"] = meter("text features", text_features, warmup=1)
    return out


def batch(clip, num_classes: int, device):
    import torch

    size = clip.model.config.vision_config.image_size
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, size, size, generator=gen).to(device)
    return images, (torch.arange(BATCH) % num_classes).to(device)


CASES = {"LLaMP": llamp_case, "MaPLe": maple_case}


def run_case(job: dict, queue) -> None:
    try:
        if job["device"] == "cpu":  # DeepSpeed runs on CPU only under a launcher: this process is a one-rank one
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(job["port"]))
        queue.put(CASES[job["method"]](job))
    except BaseException:
        import traceback

        queue.put(RuntimeError(traceback.format_exc()))


def in_process(job: dict) -> dict:
    """``job``'s case in a spawned process (its memory its own); its result, or its error raised here."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_case, args=(job, queue))
    process.start()
    result = queue.get()
    process.join()
    if isinstance(result, BaseException):
        raise RuntimeError(f"{job['method']} ({job['prec']}, {len(job['classnames'])} classes) failed:\n{result}")
    return result


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_check_assets(folder: str, tiny: bool, classnames: list[str]) -> dict[str, str]:
    """CLIP and LLM folders (real widths, or the tiny models) and a one-template bf16 cache of ``classnames``."""
    import torch

    from benchmarks.real_width_assets import write_cache, write_models
    from llamp.clip.loading import load_clip
    from llamp.tiny.models import write_tiny_models

    torch.manual_seed(0)
    paths = write_tiny_models(os.path.join(folder, "tiny"), pretrained=False) if tiny else write_models(folder)
    paths["cache"] = os.path.join(folder, "cache")
    write_cache(paths["cache"], classnames, paths["llm"], load_clip("ViT-B/16", paths["clip"]), num_templates=1,
                dtype=torch.bfloat16)
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny models (on CPU without CUDA): a smoke run")
    parser.add_argument("--classes", type=int, nargs="+", help="class counts (default 24 500; --tiny: 6 18)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.real_width_assets import class_names

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        parser.error("no CUDA device: run with --tiny (the real widths are for a GPU; on CPU see "
                     "benchmarks/real_width.py)")
    counts = sorted(args.classes or ([6, 18] if args.tiny else [24, 500]))
    names = class_names(max(counts))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llamp-gpu-check-") as work:
        paths = write_check_assets(work, args.tiny, names)
        base = {**paths, "device": device, "tiny": args.tiny}

        def case(method, prec, n, loss_only=False):
            return in_process({**base, "method": method, "prec": prec, "classnames": names[:n],
                               "loss_only": loss_only, "port": free_port()})

        rows = {(m, n): case(m, "bf16", n) for n in counts for m in CASES}
        fp32 = case("LLaMP", "fp32", counts[0], loss_only=True)["first_loss"]
    bf16 = rows["LLaMP", counts[0]]["first_loss"]
    check = {"classes": counts[0], "fp32": fp32, "bf16": bf16, "relative": abs(bf16 - fp32) / abs(fp32)}
    check["pass"] = check["relative"] <= LOSS_REL_TOL
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (tiny models: figures mean nothing)"
    print(f"\nGPU check on {device_name}, torch {torch.__version__}, batch {BATCH}, "
          f"{'demo' if args.tiny else 'reference'} configs, {time.perf_counter() - started:.0f} s")
    print(f"loss check, LLaMP first step at {counts[0]} classes: fp32 {fp32:.4f}, bf16 DeepSpeed {bf16:.4f}, "
          f"relative difference {check['relative']:.4f} (bound {LOSS_REL_TOL}): {'PASS' if check['pass'] else 'FAIL'}")
    memory = "peak GPU memory" if device == "cuda" else "peak resident memory"
    print(f"\n| method (bf16) | classes | step s | step {memory} GiB | text features s (one template) | "
          f"text features {memory} GiB |")
    print("|---|---|---|---|---|---|")
    for (method, n), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {method}{' (DeepSpeed ZeRO-2)' if method == 'LLaMP' else ''} | {n} | {r['step']['s']:.3f} | "
              f"{r['step']['peak_gib']:.2f} | {r['text_features']['s']:.3f} | {r['text_features']['peak_gib']:.2f} |")
    results = {"device": device_name, "torch": torch.__version__, "batch": BATCH, "tiny": args.tiny,
               "loss_check": check,
               "rows": [{"method": m, "classes": n, "step_s": r["step"]["s"], "step_peak_gib": r["step"]["peak_gib"],
                         "text_features_s": r["text_features"]["s"],
                         "text_features_peak_gib": r["text_features"]["peak_gib"]} for (m, n), r in rows.items()]}
    if args.json:
        from llamp.atomic_files import write_json_atomic

        write_json_atomic(args.json, results)
    if not check["pass"]:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
