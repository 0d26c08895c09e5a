"""train.py end to end through Dassl: zero-shot CLIP on Synthetic, and bad input."""
import re

import pytest
from train_cli import ZERO_SHOT_EVAL, accuracy, error_line, run_train, train_argv


@pytest.mark.parametrize("subsample,num_classes", [("all", 36), ("base", 18), ("new", 18)])
def test_zeroshot_clip_evaluates_each_subset(tiny_models, data_root, tmp_path_factory, subsample, num_classes):
    out = tmp_path_factory.mktemp(f"zs_{subsample}")
    proc = run_train(*train_argv("ZeroshotCLIP", data_root, out, tiny_models, "DATASET.SUBSAMPLE_CLASSES", subsample,
                                 **ZERO_SHOT_EVAL))
    assert re.search(rf"# classes\s+{num_classes}\b", proc.stdout)
    with open(out / "log.txt") as f:
        assert accuracy(f.read()) == accuracy(proc.stdout)  # the log that result parsers read


def test_unknown_trainer_lists_the_prompt_learning_trainers_first(tmp_path):
    proc = run_train("--root", str(tmp_path), "--trainer", "NoSuchTrainer",
                     "--dataset-config-file", "configs/datasets/synthetic.yaml", check=False)
    line = error_line(proc)
    ours = line.index("prompt-learning trainers: CoCoOp, CoOp, KgCoOp, LLaMP, MaPLe, PromptSRC, ZeroshotCLIP")
    assert "NoSuchTrainer" in line and ours < line.index("ADDA")  # Dassl's stock trainers come after


def test_unknown_dataset_lists_the_registered_ones(tmp_path):
    config = tmp_path / "bad_dataset.yaml"
    config.write_text("DATASET:\n  NAME: NoSuchDataset\n")
    proc = run_train("--root", str(tmp_path), "--trainer", "ZeroshotCLIP",
                     "--dataset-config-file", str(config), check=False)
    line = error_line(proc)
    assert "NoSuchDataset" in line and "OxfordPets" in line and "Synthetic" in line


def test_bad_config_inputs_are_one_line_errors(tiny_models, tmp_path):
    proc = run_train("--root", str(tmp_path), "--trainer", "ZeroshotCLIP",
                     "--dataset-config-file", "configs/datasets/synthetic.yaml",
                     "--config-file", str(tmp_path / "missing.yaml"), check=False)
    assert "missing.yaml" in error_line(proc)
    proc = run_train("--root", str(tmp_path), "--trainer", "ZeroshotCLIP",
                     "--dataset-config-file", "configs/datasets/synthetic.yaml",
                     "TRAINER.ZEROSHOTCLIP.NO_SUCH_KEY", "1", check=False)
    assert "NO_SUCH_KEY" in error_line(proc)
    proc = run_train(*train_argv("ZeroshotCLIP", tmp_path / "data", tmp_path / "out", tiny_models,
                                 "INPUT.SIZE", "(32,32)", **ZERO_SHOT_EVAL), check=False)
    assert "INPUT.SIZE" in error_line(proc)
