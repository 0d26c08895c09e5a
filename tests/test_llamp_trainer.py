"""The LLaMP trainer through Dassl on Synthetic with the tiny models and a real knowledge cache: its schedule,
checkpoints, memory, DeepSpeed on CPU, and inputs refused before training. (What every trainer does alike:
test_trainers_common.py.)"""
import json
import os
import re
import shutil
import sys

import pytest
import torch
from train_cli import (accuracy, error_line, free_port, in_process_trainer, run_train, single_process_launcher_env,
                       train_argv, training_losses)


def test_reference_schedule_through_the_trainer(tiny_models, synthetic_cache, tmp_path):
    """base2new.yaml's schedule, read from the trainer's own optimiser as training steps it
    (the values of the release: LR 2e-4 / LoRA 2e-5, 20 epochs)."""
    trainer = in_process_trainer(
        "LLaMP", synthetic_cache["root"], tmp_path, tiny_models, "OPTIM.MAX_EPOCH", "20", "DATASET.NUM_SHOTS", "16",
        "TRAINER.LLAMP.PROMPT_DEPTH", "2", "TRAINER.LLAMP.VISUAL_PROMPT_DEPTH", "2", "TRAINER.LLAMP.LORA_LAYERS", "[1]",
        "TRAINER.LLAMP.NUM_LLM_TOKENS", "4", "TRAINER.LLAMP.PREC", "fp32", "TRAINER.LLAMP.DEEPSPEED", "False",
        "DATALOADER.NUM_WORKERS", "0", config="base2new")
    batches = len(trainer.train_loader_x)
    assert batches == 18 * 16 // 4  # 18 base classes x 16 shots, batch 4: 72, so floor(72 / 10) = 7
    trainer.num_batches = batches
    lrs = []  # [epoch][iteration] -> (main, lora)
    for _ in range(20):
        epoch = []
        for trainer.batch_idx in range(batches):
            epoch.append(tuple(group["lr"] for group in trainer.optim.param_groups))
            trainer.optim.step()  # (no gradients: only keeps torch's step-order check quiet)
            trainer.advance_lr_schedule()
        lrs.append(epoch)
    assert len(lrs[0][0]) == 2  # the main group and LoRA
    assert lrs[0][:7] == [(1e-5, 5e-6)] * 7  # epoch 0: its first tenth at the floors ...
    assert lrs[0][7:] == [(2e-4, 2e-5)] * (batches - 7)  # ... the rest at the base rates
    expected = {1: (1.988e-4, 1.988e-5), 11: (8.44e-5, 8.44e-6), 17: (1.09e-5, 5e-6), 19: (1e-5, 5e-6)}
    for e, (main, lora) in expected.items():
        assert all(lr == lrs[e][0] for lr in lrs[e])  # constant within an epoch after epoch 0
        assert lrs[e][0] == (pytest.approx(main, rel=1e-3), pytest.approx(lora, rel=1e-3)), e


def test_checkpoint_round_trip_gives_identical_logits(tiny_models, synthetic_cache, tmp_path):
    trainer = in_process_trainer("LLaMP", synthetic_cache["root"], tmp_path / "run", tiny_models)
    trainer.train()
    batch = next(iter(trainer.test_loader))
    images = batch["img"][:8]
    trainer.set_model_mode("eval")
    trainer.eval_text_features = trainer.template_text_features()
    expected = trainer.model_inference(images)

    state = torch.load(tmp_path / "run" / "llamp" / "model.pth.tar-2", weights_only=True)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(state["state_dict"]) == trainable  # trainable tensors only: no CLIP, no frozen LLM weights
    assert "TRAINER" in state["config"]

    fresh = in_process_trainer("LLaMP", synthetic_cache["root"], tmp_path / "eval", tiny_models, rng_seed=2)
    fresh.set_model_mode("eval")
    fresh.eval_text_features = fresh.template_text_features()
    assert not torch.equal(fresh.model_inference(images), expected)  # a different initialisation
    fresh.load_model(str(tmp_path / "run"), epoch=2)
    fresh.eval_text_features = fresh.template_text_features()
    assert torch.equal(fresh.model_inference(images), expected)


def tensor_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def test_model_memory_does_not_grow_with_the_number_of_templates(tiny_models, synthetic_cache, tmp_path):
    """The same run with an 11-template and a 2-template cache: same model bytes, one template per step."""
    small = tmp_path / "two_templates"
    shutil.copytree(synthetic_cache["cache"], small)
    with open(small / "metadata.json") as f:
        meta = json.load(f)
    meta["query_templates"] = meta["query_templates"][:2]
    meta["templates"] = [e for e in meta["templates"] if e["index"] < 2]
    with open(small / "metadata.json", "w") as f:
        json.dump(meta, f)

    sizes, loaded = {}, {}
    for name, cache_dir in (("eleven", synthetic_cache["cache"]), ("two", str(small))):
        trainer = in_process_trainer("LLaMP", synthetic_cache["root"], tmp_path / name, tiny_models,
                                     "TRAINER.LLAMP.CACHE_DIR", cache_dir)
        requested = []
        original = trainer.cache.kv
        trainer.cache.kv = lambda t, *a, **k: requested.append(t) or original(t, *a, **k)
        trainer.num_batches, trainer.batch_idx = 10, 0
        trainer.forward_backward(next(iter(trainer.train_loader_x)))
        loaded[name] = requested
        sizes[name] = tensor_bytes(trainer.model) + sum(
            t.numel() * t.element_size() for t in vars(trainer).values() if isinstance(t, torch.Tensor))
    assert trainer.cache.num_templates == 2
    assert sizes["eleven"] == sizes["two"]
    assert len(loaded["eleven"]) == len(loaded["two"]) == 1  # one template's K/V read per step


def test_deepspeed_on_cpu_matches_plain_pytorch_and_runs_on_two_processes(tiny_models, synthetic_cache, tmp_path):
    root = synthetic_cache["root"]
    plain = run_train(*train_argv("LLaMP", root, tmp_path / "plain", tiny_models))
    assert "DeepSpeed on" not in plain.stdout
    single = run_train(*train_argv("LLaMP", root, tmp_path / "ds1", tiny_models, "TRAINER.LLAMP.DEEPSPEED", "True"),
                       env=single_process_launcher_env())
    assert "DeepSpeed on cpu (rank 0 of 1)" in single.stdout
    ours, theirs = training_losses(single.stdout), training_losses(plain.stdout)
    assert len(ours["loss"]) == len(theirs["loss"]) == 2 * (36 // 4)  # 2 epochs of 36 images, demo batch 4
    for name in ("loss", "ce", "text_l1", "image_l1", "kl"):
        assert ours[name] == pytest.approx(theirs[name], abs=2e-4), name  # printed with 4 decimals
    assert accuracy(single.stdout) == accuracy(plain.stdout)

    two = run_train(*train_argv("LLaMP", root, tmp_path / "ds2", tiny_models, "TRAINER.LLAMP.DEEPSPEED", "True"),
                    launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", str(free_port())))
    assert "rank 0 of 2" in two.stdout and "rank 1 of 2" in two.stdout
    with open(tmp_path / "ds2" / "log.txt") as f:
        log = f.read()
    # Each rank trains on half of the 36 base images: 18 // batch 4 = 4 steps per epoch; rank 0 alone logs.
    assert len(training_losses(log)["loss"]) == 2 * 4
    assert len(re.findall(r"\* accuracy", two.stdout)) == 1  # only rank 0 evaluates
    assert os.path.isfile(tmp_path / "ds2" / "llamp" / "model.pth.tar-2")


def test_deepspeed_without_cuda_or_launcher_says_what_happens(tiny_models, synthetic_cache, tmp_path):
    proc = run_train(*train_argv("LLaMP", synthetic_cache["root"], tmp_path / "note", tiny_models,
                                 "TRAINER.LLAMP.DEEPSPEED", "True", "OPTIM.MAX_EPOCH", "1"))
    assert "CUDA is not available: training with plain PyTorch on CPU" in proc.stdout


@pytest.fixture
def other_clip(tmp_path):
    """A tiny CLIP whose joint embedding is 32-d instead of 48-d."""
    from transformers import CLIPConfig, CLIPModel

    from llamp.clip.tokenizer import build_clip_tokenizer
    from llamp.tiny.models import TINY_CLIP

    folder = tmp_path / "clip32"
    CLIPModel(CLIPConfig(**{**TINY_CLIP, "projection_dim": 32})).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    return str(folder)


def test_bad_inputs_are_caught_before_training(tiny_models, synthetic_cache, tmp_path, other_clip):
    def fails(*opts):
        proc = run_train(*train_argv("LLaMP", synthetic_cache["root"], tmp_path / "bad", tiny_models, *opts),
                         check=False)
        assert "epoch [" not in proc.stdout
        return error_line(proc)

    assert "llm_prompts build" in fails("TRAINER.LLAMP.CACHE_DIR", str(tmp_path / "no_cache"))

    renamed = tmp_path / "renamed"
    shutil.copytree(synthetic_cache["cache"], renamed)
    meta = json.loads((renamed / "metadata.json").read_text())
    meta["classnames"] = [c.replace("red", "crimson") for c in meta["classnames"]]
    (renamed / "metadata.json").write_text(json.dumps(meta))
    assert "red circle" in fails("TRAINER.LLAMP.CACHE_DIR", str(renamed))

    from llamp.tiny.llms import DEMO_FAMILY, write_tiny_llm

    wider = write_tiny_llm(DEMO_FAMILY, str(tmp_path / "wider_llm"), hidden_size=96)
    assert "another LLM" in fails("TRAINER.LLAMP.LLM_PATH", str(wider),
                                  "TRAINER.LLAMP.CACHE_DIR", synthetic_cache["cache"])
    assert "NUM_DECODER_LAYERS" in fails("TRAINER.LLAMP.NUM_DECODER_LAYERS", "3")
    assert "32-d" in fails("MODEL.BACKBONE.PATH", other_clip)
    assert "LLM_PATH" in fails("TRAINER.LLAMP.LLM_PATH", str(tmp_path / "no_llm"))


def test_a_cache_is_refused_with_other_weights_of_the_same_shapes(tiny_models, synthetic_cache, tmp_path):
    """Same widths and config.json, other weights: the cache's CLIP and LLM digests tell them apart."""
    from transformers import CLIPConfig, CLIPModel

    from llamp.clip.tokenizer import build_clip_tokenizer
    from llamp.tiny.llms import DEMO_FAMILY, write_tiny_llm
    from llamp.tiny.models import TINY_CLIP

    torch.manual_seed(123)
    clip = tmp_path / "other_clip"
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(clip)
    build_clip_tokenizer().save_pretrained(clip)
    llm = tmp_path / "other_llm"
    write_tiny_llm(DEMO_FAMILY, str(llm), seed=123)
    with open(os.path.join(tiny_models["llm"], "config.json")) as a, open(llm / "config.json") as b:
        assert json.load(a) == json.load(b)  # only the weights differ

    def fails(*opts):
        proc = run_train(*train_argv("LLaMP", synthetic_cache["root"], tmp_path / "bad", tiny_models, *opts,
                                     "TRAINER.LLAMP.CACHE_DIR", synthetic_cache["cache"]), check=False)
        assert "epoch [" not in proc.stdout
        return error_line(proc)

    line = fails("MODEL.BACKBONE.PATH", str(clip))
    assert "distillation targets were made with the CLIP" in line and str(clip) in line
    assert tiny_models["clip"] in line and "llm_prompts build" in line
    line = fails("TRAINER.LLAMP.LLM_PATH", str(llm))
    assert "weights of decoder layer 1 differ" in line and str(llm) in line and "llm_prompts build" in line
