"""Every prompt learner learns: on the base classes of both drawn datasets, with the pre-trained tiny CLIP and
its demo config (16 shots, seed 1), a method's base accuracy beats zero-shot CLIP's by MARGIN points; trainers
broken on purpose (tests/broken_trainers.py) do not.

Synthetic is the dataset the demo configs were tuned on; SyntheticSketch draws the same classes in another
style (another background, clutter and light) and was never used to tune anything, so a method that passes
there learns, rather than fits its config to one set of drawings.

MARGIN was set from runs at seeds 1, 2 and 3 on both (`TINY=1 bash scripts/compare.sh <dataset> 1 2 3`, tables
in the README): the smallest gain over zero-shot of any method at seed 1, less room for noise across machines.
A run is deterministic on one machine; other CPUs and thread counts round differently.
"""
import os
import re
import sys

import pytest
from broken_trainers import METHODS
from train_cli import REPO, accuracy, run_train, single_process_launcher_env, train_argv

STYLES = ("synthetic", "synthetic_sketch")  # configs/datasets/<name>.yaml
# Accuracy points over zero-shot on the base classes. Measured gains at seed 1 (README): the smallest is
# CoCoOp's and KgCoOp's +10.0 on Synthetic (every gain on SyntheticSketch is at least +19.4): 5 points of room.
MARGIN = 5.0


@pytest.fixture(scope="module")
def learning_root(pretrained_tiny_models, tmp_path_factory):
    """Both drawn datasets and their knowledge caches, built with the pre-trained tiny CLIP."""
    from llm_prompts.__main__ import main

    root = tmp_path_factory.mktemp("learning_data")
    for style in STYLES:
        assert main(["build", "--root", str(root), "--dataset-config-file",
                     os.path.join(REPO, "configs", "datasets", f"{style}.yaml"),
                     "--llm", pretrained_tiny_models["llm"], "--clip", pretrained_tiny_models["clip"],
                     "--spacy-model", "none", "--quiet"]) == 0
    return str(root)


def base_accuracy(trainer, style, models, root, out, *opts, **run_kwargs):
    """The accuracy of the demo config's run: 16 shots of the base classes, the LLM named for every trainer."""
    proc = run_train(*train_argv(trainer, root, out, models, *opts, dataset=style, shots=16, epochs=None,
                                 print_freq=None, llm=models["llm"]), **run_kwargs)
    assert re.search(r"# classes\s+18\b", proc.stdout)
    return accuracy(proc.stdout)


@pytest.fixture(scope="module")
def zero_shot(pretrained_tiny_models, learning_root, tmp_path_factory):
    """Zero-shot CLIP's base accuracy on each style."""
    return {style: base_accuracy("ZeroshotCLIP", style, pretrained_tiny_models, learning_root,
                                 tmp_path_factory.mktemp(f"zs_{style}")) for style in STYLES}


@pytest.mark.parametrize("style", STYLES)
def test_pretrained_zero_shot_is_far_from_chance_and_from_perfect(zero_shot, style):
    assert 25.0 <= zero_shot[style] <= 85.0  # chance is 100 / 18 = 5.6


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("trainer", METHODS)
def test_training_on_base_beats_zero_shot(trainer, style, pretrained_tiny_models, learning_root, zero_shot,
                                          tmp_path):
    learned = base_accuracy(trainer, style, pretrained_tiny_models, learning_root, tmp_path)
    assert learned >= zero_shot[style] + MARGIN, f"{trainer} on {style}: {learned}, zero-shot {zero_shot[style]}"


def test_llamp_in_bf16_under_deepspeed_beats_zero_shot(pretrained_tiny_models, learning_root, zero_shot, tmp_path):
    """The path users run on GPUs (PREC bf16, DeepSpeed ZeRO-2 in bf16), here on CPU under a one-process launcher."""
    learned = base_accuracy("LLaMP", "synthetic", pretrained_tiny_models, learning_root, tmp_path,
                            "TRAINER.LLAMP.PREC", "bf16", "TRAINER.LLAMP.DEEPSPEED", "True",
                            env=single_process_launcher_env())
    assert learned >= zero_shot["synthetic"] + MARGIN, f"LLaMP bf16 DeepSpeed: {learned}, zero-shot {zero_shot}"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("trainer, breakage", [("CoOp", "random_labels"), ("LLaMP", "random_labels"),
                                               ("LLaMP", "nothing_optimised")])
def test_broken_trainers_fail_the_learning_check(trainer, breakage, style, pretrained_tiny_models, learning_root,
                                                 zero_shot, tmp_path):
    broken = base_accuracy(trainer, style, pretrained_tiny_models, learning_root, tmp_path,
                           launcher=(sys.executable, os.path.join(REPO, "tests", "broken_trainers.py")),
                           env={"BROKEN": breakage})
    assert broken < zero_shot[style] + MARGIN, f"{trainer} with {breakage} on {style}: {broken}, " \
                                                f"zero-shot {zero_shot[style]}"
