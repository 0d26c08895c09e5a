"""Checkpoint size against the full model, and the demo training run's time and peak memory.

    python benchmarks/footprint.py [--real-widths]

1. The demo model (tiny CLIP + tiny Llama): bytes of a LLaMP checkpoint (the
   trainable tensors) against the bytes of the model's full state dict.
2. With --real-widths: the same at CLIP ViT-B/16 and LLaMA-2-7B widths with
   random weights; the LLM folder holds only the last decoder layer and the
   final norm (all the decoder needs), so this fits in a few GB of RAM.
3. The demo's training run through train.py: wall time and peak resident memory
   of that process, with a zero-shot CLIP evaluation of the same data as the
   baseline measured in the same script.
Ratios are what to compare across machines; absolute numbers depend on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.demo_assets import write_demo  # noqa: E402
from benchmarks.real_width_assets import real_width_clip, write_real_width_llm  # noqa: E402


def state_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_vs_full(clip, llm_folder: str, classnames: list[str], config) -> dict:
    from llamp.llm.tail import load_decoder_tail
    from llamp.model import LLaMPModel

    targets = torch.zeros(len(classnames), clip.model.config.projection_dim)  # a buffer: not in a checkpoint
    model = LLaMPModel(clip.model, clip.tokenizer, load_decoder_tail(llm_folder, 1), classnames, config, targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    full = {id(t): t for t in list(model.state_dict(keep_vars=True).values())}
    return {"trainable_params": sum(p.numel() for p in trainable),
            "checkpoint_bytes": state_bytes(trainable),  # saved as fp32, trainable only
            "full_state_dict_bytes": state_bytes(full.values())}


def run_measured(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of a child process, and its stdout."""
    script = ("import resource, subprocess, sys, time, json; t = time.time(); "
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
              "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
              "print(json.dumps([time.time() - t, r / 1024, p.returncode, p.stdout[-4000:]]))")
    out = subprocess.run([sys.executable, "-c", script, sys.executable, *args], cwd=REPO,
                         capture_output=True, text=True, check=True)
    seconds, rss, code, stdout = json.loads(out.stdout)
    if code != 0:
        raise RuntimeError(f"{args[0]} failed:\n{stdout}")
    return seconds, rss, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-widths", action="store_true", help="also measure at ViT-B/16 + LLaMA-2-7B widths")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llamp.clip.loading import load_clip
    from llamp.model import LLaMPConfig

    work = tempfile.mkdtemp(prefix="llamp-footprint-")
    tiny, data = write_demo(work)
    classnames = [f"class {i}" for i in range(6)]
    demo_config = LLaMPConfig(num_llm_tokens=4, prompt_depth=2, num_visual_prompts=2, visual_prompt_depth=2,
                              lora_layers=(1,))
    results = {"demo_model": checkpoint_vs_full(load_clip("ViT-B/16", tiny["clip"]), tiny["llm"], classnames,
                                                demo_config)}
    if args.real_widths:
        llm = os.path.join(work, "llama2-7b-last-layer")
        os.makedirs(llm)
        write_real_width_llm(llm)
        results["real_widths"] = checkpoint_vs_full(real_width_clip(), llm, [f"class {i}" for i in range(50)],
                                                    LLaMPConfig())
    for r in results.values():
        r["checkpoint_over_full"] = round(r["checkpoint_bytes"] / r["full_state_dict_bytes"], 4)

    common = ["--root", data, "--seed", "1", "--dataset-config-file", "configs/datasets/synthetic.yaml",
              "MODEL.BACKBONE.PATH", tiny["clip"]]
    zs = run_measured(["train.py", "--trainer", "ZeroshotCLIP", "--config-file",
                       "configs/trainers/ZeroshotCLIP/demo.yaml", "--output-dir", os.path.join(work, "zs"),
                       "--eval-only", *common, "DATASET.SUBSAMPLE_CLASSES", "base"])
    llamp = run_measured(["train.py", "--trainer", "LLaMP", "--config-file", "configs/trainers/LLaMP/demo.yaml",
                          "--output-dir", os.path.join(work, "llamp"), *common,
                          "TRAINER.LLAMP.LLM_PATH", tiny["llm"], "DATASET.NUM_SHOTS", "16",
                          "DATASET.SUBSAMPLE_CLASSES", "base"])
    ckpt_dir = os.path.join(work, "llamp", "llamp")
    saved = [os.path.getsize(os.path.join(ckpt_dir, f)) for f in os.listdir(ckpt_dir) if f.startswith("model")]
    results["demo_training_run"] = {
        "llamp_wall_s": round(llamp[0], 1), "llamp_peak_rss_mib": round(llamp[1]),
        "zeroshot_eval_wall_s": round(zs[0], 1), "zeroshot_peak_rss_mib": round(zs[1]),
        "peak_rss_ratio_llamp_over_zeroshot": round(llamp[1] / zs[1], 2),
        "checkpoint_file_bytes": max(saved),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
