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


def write_real_width_llm(folder: str) -> None:
    """LLaMA-2-7B's config with random weights for layer 31 and the final norm only."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
    config.save_pretrained(folder)
    layer, norm = LlamaDecoderLayer(config, layer_idx=31), LlamaRMSNorm(4096)
    tensors = {f"model.layers.31.{k}": v.to(torch.bfloat16) for k, v in layer.state_dict().items()}
    tensors["model.norm.weight"] = norm.weight.detach().to(torch.bfloat16)
    save_file(tensors, os.path.join(folder, "model.safetensors"))


def real_width_clip():
    from transformers import CLIPConfig, CLIPModel

    from llamp.clip.loading import LoadedCLIP
    from llamp.clip.tokenizer import build_clip_tokenizer

    config = CLIPConfig(text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                                         num_hidden_layers=12, hidden_act="quick_gelu", eos_token_id=49407),
                        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                           num_hidden_layers=12, image_size=224, patch_size=16,
                                           hidden_act="quick_gelu"),
                        projection_dim=512)
    return LoadedCLIP(CLIPModel(config).eval(), build_clip_tokenizer(), "random ViT-B/16")


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
    from llamp.tiny.models import write_tiny_models

    work = tempfile.mkdtemp(prefix="llamp-footprint-")
    tiny = write_tiny_models(os.path.join(work, "tiny"), pretrained=False)
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

    data = os.path.join(work, "data")
    subprocess.run([sys.executable, "-m", "llm_prompts", "build", "--root", data, "--dataset-config-file",
                    "configs/datasets/synthetic.yaml", "--llm", tiny["llm"], "--clip", tiny["clip"], "--quiet"],
                   cwd=REPO, check=True, capture_output=True)
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
