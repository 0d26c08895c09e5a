"""Same seed, same run: whether the few-shot sample is drawn or read, whatever the loader workers,
and when a killed run is resumed from its last checkpoint (train.py in a subprocess, as a user runs it)."""
import json
import os
import shutil

import pytest
import torch
from train_cli import run_train, single_process_launcher_env, train_argv

from trainers.checkpoint import LATEST_FILE, epoch_file_name

EPOCHS = 3
TRAINERS = {"LLaMP": "llamp", "CoOp": "prompt_learner"}  # trainer: its checkpoint folder
# Every run: 4 shots of the base classes, a checkpoint each epoch and no evaluation (the runs compare weights).
RUN = dict(shots=4, epochs=EPOCHS, print_freq=None)
EACH_EPOCH = ("TRAIN.CHECKPOINT_FREQ", "1", "TEST.NO_TEST", "True")


def final_weights(out, trainer, epoch=EPOCHS):
    folder = TRAINERS[trainer]
    return torch.load(os.path.join(out, folder, epoch_file_name(epoch)), weights_only=True)["state_dict"]


def assert_identical(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def kill_after(out, trainer, epoch):
    """Leave ``out`` as a run killed right after saving epoch ``epoch`` would have left it."""
    folder = os.path.join(out, TRAINERS[trainer])
    for name in os.listdir(folder):
        if name.startswith("model.pth.tar-") and int(name.rsplit("-", 1)[1]) > epoch:
            os.remove(os.path.join(folder, name))
    with open(os.path.join(folder, LATEST_FILE), "w") as f:
        f.write(epoch_file_name(epoch) + "\n")


@pytest.fixture
def fresh_root(synthetic_cache, tmp_path):
    """A data root with Synthetic and its knowledge cache but no few-shot sample cached yet."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_cache["root"], root)
    shutil.rmtree(root / "synthetic" / "split_fewshot", ignore_errors=True)
    return root


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_same_seed_same_weights_cache_workers_and_resume(tiny_models, fresh_root, tmp_path, trainer):
    fewshot = fresh_root / "synthetic" / "split_fewshot"
    drawn = tmp_path / "drawn"
    run_train(*train_argv(trainer, fresh_root, drawn, tiny_models, *EACH_EPOCH, **RUN))  # draws the sample, caches it
    assert any(fewshot.iterdir())
    reference = final_weights(drawn, trainer)

    read = tmp_path / "read"
    run_train(*train_argv(trainer, fresh_root, read, tiny_models, *EACH_EPOCH, **RUN))  # reads the cached sample
    assert_identical(final_weights(read, trainer), reference)

    workers = tmp_path / "workers"
    run_train(*train_argv(trainer, fresh_root, workers, tiny_models, *EACH_EPOCH, "DATALOADER.NUM_WORKERS", "2",
                          **RUN))
    assert_identical(final_weights(workers, trainer), reference)

    # Killed after epoch 1 (its files as such a run leaves them), then started again: auto-resume.
    resumed = tmp_path / "resumed"
    shutil.copytree(drawn, resumed)
    kill_after(resumed, trainer, 1)
    proc = run_train(*train_argv(trainer, fresh_root, resumed, tiny_models, *EACH_EPOCH, **RUN))
    assert "Resuming from epoch 1" in proc.stdout
    assert_identical(final_weights(resumed, trainer), reference)

    # The runs differ from another seed's: the comparison can fail.
    other = tmp_path / "other"
    run_train(*train_argv(trainer, fresh_root, other, tiny_models, *EACH_EPOCH, seed=2, **RUN))
    assert any(not torch.equal(v, reference[k]) for k, v in final_weights(other, trainer).items())


def test_few_shot_sample_through_train_py_is_the_ecosystems(tiny_models, fresh_root, tmp_path):
    """The sample train.py caches is still Dassl's sampling right after set_random_seed(SEED)."""
    from dassl.config import get_cfg_default
    from dassl.data.datasets import DatasetBase, build_dataset
    from dassl.utils import set_random_seed

    import trainers
    import vl_datasets  # noqa: F401  (registers the datasets)

    run_train(*train_argv("CoOp", fresh_root, tmp_path / "run", tiny_models, *EACH_EPOCH, "OPTIM.MAX_EPOCH", "1",
                          **RUN))
    written = list((fresh_root / "synthetic" / "split_fewshot").iterdir())
    assert [p.name for p in written] == ["shot_4-seed_1.json"]
    stored = json.loads(written[0].read_text())

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file("configs/datasets/synthetic.yaml")
    cfg.DATASET.ROOT = str(fresh_root)
    full = build_dataset(cfg)  # every image: no few-shot sample
    set_random_seed(1)
    sampler = object.__new__(DatasetBase)
    expected = {"train": sampler.generate_fewshot_dataset(full.train_x, num_shots=4),
                "val": sampler.generate_fewshot_dataset(full.val, num_shots=4)}
    for split, data in expected.items():
        assert [(os.path.join(full.dataset_dir, p), y, c) for p, y, c in stored[split]] == \
            [(d.impath, d.label, d.classname) for d in data], split


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_deepspeed_resume_continues_from_the_restored_state(prec, tiny_models, fresh_root, tmp_path):
    """LLaMP under DeepSpeed (CPU, gloo), in fp32 and in bf16: killed after epoch 1 and resumed, it ends where
    the uninterrupted run ends. (The engine must start from the restored weights, and its optimiser state and,
    in bf16, its fp32 master weights must come back.)"""
    deepspeed = ("TRAINER.LLAMP.DEEPSPEED", "True", "TRAINER.LLAMP.PREC", prec)
    whole = tmp_path / "whole"
    proc = run_train(*train_argv("LLaMP", fresh_root, whole, tiny_models, *EACH_EPOCH, *deepspeed, **RUN),
                     env=single_process_launcher_env())
    assert f"DeepSpeed on cpu (rank 0 of 1): ZeRO stage 2, bf16 {prec == 'bf16'}" in proc.stdout
    assert os.path.isdir(whole / "llamp" / "deepspeed" / epoch_file_name(1))

    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    kill_after(resumed, "LLaMP", 1)
    proc = run_train(*train_argv("LLaMP", fresh_root, resumed, tiny_models, *EACH_EPOCH, *deepspeed, **RUN),
                     env=single_process_launcher_env())
    assert_identical(final_weights(resumed, "LLaMP"), final_weights(whole, "LLaMP"))
    assert "Resuming from epoch 1" in proc.stdout and "optimiser state and fp32 master weights restored" in proc.stdout


def test_deepspeed_precision_follows_prec_and_eval_only_builds_no_engine(tiny_models, fresh_root, tmp_path):
    from dassl.config import get_cfg_default

    import trainers
    from trainers.distributed import read_deepspeed_config
    from trainers.precision import Precision

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.TRAINER.NAME = "LLaMP"
    bf16 = {}
    for prec in ("fp32", "amp", "bf16"):
        for device in ("cpu", "cuda"):
            cfg.TRAINER.LLAMP.PREC = prec
            wanted = Precision(prec, device, torch.bfloat16).deepspeed_bf16
            bf16[prec, device] = read_deepspeed_config(cfg.TRAINER.LLAMP.DEEPSPEED_CONFIG, cfg, wanted)["bf16"]["enabled"]
    # the JSON itself says bf16 on; PREC decides, alike on both devices
    assert bf16 == {(prec, device): prec == "bf16" for prec in ("fp32", "amp", "bf16") for device in ("cpu", "cuda")}

    trained = tmp_path / "trained"
    run_train(*train_argv("LLaMP", fresh_root, trained, tiny_models, *EACH_EPOCH, "OPTIM.MAX_EPOCH", "1", **RUN))
    proc = run_train(*train_argv("LLaMP", fresh_root, tmp_path / "eval", tiny_models, *EACH_EPOCH,
                                 "TRAINER.LLAMP.DEEPSPEED", "True", "TEST.NO_TEST", "False",
                                 flags=("--eval-only", "--model-dir", str(trained), "--load-epoch", "1"), **RUN),
                     env=single_process_launcher_env())
    assert "accuracy" in proc.stdout and "DeepSpeed on" not in proc.stdout
