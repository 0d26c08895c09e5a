"""ClipTrainer checkpoints: trainable tensors only, Dassl's layout, weights_only loading."""
import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

from dassl.config import get_cfg_default

from llamp.errors import ConfigError
from trainers.base import ClipTrainer


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.prompt = nn.Parameter(torch.randn(2, 4))
        self.frozen.requires_grad_(False)


def bare_trainer(model):
    """A ClipTrainer with one registered model and no data (enough for checkpoints)."""
    trainer = ClipTrainer.__new__(ClipTrainer)
    trainer.cfg = get_cfg_default()
    trainer._models, trainer._optims, trainer._scheds = OrderedDict(), OrderedDict(), OrderedDict()
    optim = torch.optim.SGD([model.prompt], lr=0.1)
    trainer.register_model("prompt_learner", model, optim, None)
    return trainer


def test_checkpoint_round_trip_keeps_only_trainable_tensors(tmp_path):
    torch.manual_seed(0)
    source = bare_trainer(Model())
    source.save_model(epoch=2, directory=str(tmp_path), val_result=None)
    path = tmp_path / "prompt_learner" / "model.pth.tar-3"
    state = torch.load(path, weights_only=True)
    assert set(state["state_dict"]) == {"prompt"} and state["epoch"] == 3
    assert (tmp_path / "prompt_learner" / "checkpoint").read_text().strip() == "model.pth.tar-3"

    target_model = Model()
    target = bare_trainer(target_model)
    frozen_before = target_model.frozen.weight.clone()
    target.load_model(str(tmp_path), epoch=3)
    assert torch.equal(target_model.prompt, source._models["prompt_learner"].prompt)
    assert torch.equal(target_model.frozen.weight, frozen_before)  # untouched: not in the checkpoint

    resumed = bare_trainer(Model())
    assert resumed.resume_model_if_exist(str(tmp_path)) == 3
    assert torch.equal(resumed._models["prompt_learner"].prompt, source._models["prompt_learner"].prompt)


def test_checkpoint_from_another_model_is_refused(tmp_path):
    bare_trainer(Model()).save_model(epoch=0, directory=str(tmp_path))
    other = Model()
    other.extra = nn.Parameter(torch.zeros(1))
    with pytest.raises(ConfigError, match="does not fit"):
        bare_trainer(other).load_model(str(tmp_path), epoch=1)
    with pytest.raises(ConfigError, match="no checkpoint"):
        bare_trainer(Model()).load_model(str(tmp_path), epoch=7)
    corrupt = tmp_path / "prompt_learner" / "model.pth.tar-9"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="model.pth.tar-9"):
        bare_trainer(Model()).load_model(str(tmp_path), epoch=9)
    assert os.path.isfile(tmp_path / "prompt_learner" / "model.pth.tar-1")


def test_checkpoint_with_other_widths_is_refused(tmp_path):
    """E.g. prompts trained for another CLIP text width: one clear error, not a size-mismatch traceback."""
    bare_trainer(Model()).save_model(epoch=0, directory=str(tmp_path))
    wider = Model()
    wider.prompt = nn.Parameter(torch.randn(2, 5))
    with pytest.raises(ConfigError, match=r"other shapes.*prompt \[2, 4\] vs \[2, 5\]"):
        bare_trainer(wider).load_model(str(tmp_path), epoch=1)


def test_checkpoint_with_tensors_of_another_dtype_is_refused(tmp_path):
    """Trained tensors are saved in fp32 whatever the precision: a half-precision one is not silently cast."""
    bare_trainer(Model()).save_model(epoch=0, directory=str(tmp_path))
    path = tmp_path / "prompt_learner" / "model.pth.tar-1"
    state = torch.load(path, weights_only=True)
    state["state_dict"]["prompt"] = state["state_dict"]["prompt"].half()
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"model.pth.tar-1 holds tensors that are not float32 \(prompt torch.float16\)"):
        bare_trainer(Model()).load_model(str(tmp_path), epoch=1)
