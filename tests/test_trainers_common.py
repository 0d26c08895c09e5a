"""What every prompt-learning trainer does alike, checked for each method: train on the base classes through
train.py and evaluate the saved prompts on the new ones; a training step in each half precision it offers,
on CPU; an invalid TRAINER.<NAME>.PREC is a config error naming the key. What differs between the methods
is data (METHODS); what only one method does is tested in its own file."""
import math
import re
from dataclasses import dataclass

import pytest
import torch
from train_cli import accuracy, in_process_trainer, run_train, train_argv, training_losses

from llamp.errors import ConfigError


@dataclass(frozen=True)
class Method:
    batch: int  # the demo config's training batch size
    losses: frozenset  # the terms its training prints (the total "loss", the batch's "acc")
    state: frozenset  # what its checkpoint holds: the learned tensors only, class-agnostic
    watched: str  # a learned tensor that a training step moves
    folder: str = "prompt_learner"  # where train.py saves the checkpoints
    positive: frozenset = frozenset()  # loss terms above zero at every step of the demo run
    before_saving: tuple = ()  # what it prints, in this order, before the last checkpoint is saved
    probabilities: bool = False  # its inference gives class probabilities, from every template's text features
    knowledge_cache: bool = False  # its data root must hold the knowledge cache


METHODS = {
    "CoOp": Method(batch=8, losses=frozenset({"loss", "acc"}), state=frozenset({"prompts.context"}),
                   watched="prompts.context"),
    "CoCoOp": Method(batch=1, losses=frozenset({"loss", "acc"}),
                     state=frozenset({"prompts.context", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                      "meta_net.linear2.weight", "meta_net.linear2.bias"}),
                     watched="prompts.context"),
    "KgCoOp": Method(batch=16, losses=frozenset({"loss", "ce", "kg", "acc"}), state=frozenset({"prompts.context"}),
                     watched="prompts.context",
                     positive=frozenset({"kg"})),  # demo: "a photo of a" learned vs "a picture of a" hand-crafted
    "MaPLe": Method(batch=4, losses=frozenset({"loss", "acc"}),
                    state=frozenset({"ctx", "deep_ctx", "couplings.0.weight", "couplings.0.bias",
                                     "couplings.1.weight", "couplings.1.bias"}),
                    watched="ctx"),
    "PromptSRC": Method(batch=8, losses=frozenset({"loss", "ce", "text_l1", "image_l1", "kl", "acc"}),
                        state=frozenset({"ctx", "deep_text", "visual_prompts"}), watched="ctx",
                        # the aggregated prompts are in place before the last save and the test
                        before_saving=("Gaussian-weighted prompts",)),
    "LLaMP": Method(batch=4, losses=frozenset({"loss", "ce", "text_l1", "image_l1", "kl", "acc"}),
                    state=frozenset({"context", "deep_context", "visual_prompts", "projections.0.weight",
                                     "projections.1.weight", "projection_bias", "logit_scale", "decoder.tokens",
                                     "decoder.norm.weight", "decoder.layers.0.input_layernorm.weight",
                                     "decoder.layers.0.post_attention_layernorm.weight",
                                     "decoder.layers.0.self_attn.q_proj.weight",
                                     "decoder.layers.0.self_attn.o_proj.weight",
                                     *(f"vision_encoder.layers.1.self_attn.{proj}.lora_{ab}.default.weight"
                                       for proj in ("q_proj", "v_proj") for ab in "AB")}),
                    watched="decoder.tokens", folder="llamp", probabilities=True, knowledge_cache=True),
}
HALF_PRECISIONS = [("CoOp", "amp"), ("CoOp", "fp16"), ("CoCoOp", "fp16"), ("KgCoOp", "amp"), ("MaPLe", "amp"),
                   ("MaPLe", "fp16"), ("PromptSRC", "amp"), ("PromptSRC", "fp16"), ("LLaMP", "bf16"), ("LLaMP", "amp")]
FROZEN_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}  # amp: fp32 under autocast


@pytest.fixture
def root(trainer, request):
    """The data root ``trainer`` trains from (built only when a test of that method runs)."""
    if METHODS[trainer].knowledge_cache:
        return request.getfixturevalue("synthetic_cache")["root"]
    return request.getfixturevalue("data_root")


@pytest.mark.parametrize("trainer", list(METHODS))
def test_train_on_base_then_evaluate_on_new_through_train_py(trainer, root, tiny_models, tmp_path):
    method = METHODS[trainer]
    base = run_train(*train_argv(trainer, root, tmp_path / "base", tiny_models))
    assert re.search(r"# classes\s+18\b", base.stdout) and accuracy(base.stdout) is not None
    losses = training_losses(base.stdout)
    assert set(losses) == method.losses
    assert len(losses["loss"]) == 2 * (18 * 2 // method.batch)  # 2 epochs of 2 shots of 18 classes
    assert all(v > 0 for name in method.positive for v in losses[name])
    checkpoint = tmp_path / "base" / method.folder / "model.pth.tar-2"
    assert set(torch.load(checkpoint, weights_only=True)["state_dict"]) == method.state
    printed = [base.stdout.index(text) for text in (*method.before_saving, "model.pth.tar-2")]
    assert printed == sorted(printed) and printed[-1] < base.stdout.rindex("* accuracy")

    new = run_train(*train_argv(trainer, root, tmp_path / "new", tiny_models, subset="new", flags=(
        "--eval-only", "--model-dir", str(tmp_path / "base"), "--load-epoch", "2")))
    assert re.search(r"# classes\s+18\b", new.stdout) and accuracy(new.stdout) is not None
    assert f"Load {checkpoint}" in new.stdout and "epoch [" not in new.stdout


@pytest.mark.parametrize("trainer,prec", HALF_PRECISIONS)
def test_half_precisions_train_a_step_on_cpu(trainer, prec, root, tiny_models, tmp_path):
    method = METHODS[trainer]
    t = in_process_trainer(trainer, root, tmp_path, tiny_models, f"TRAINER.{trainer.upper()}.PREC", prec)
    trainable = {k: p.detach().clone() for k, p in t.model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in t.model.parameters() if not p.requires_grad} == {FROZEN_DTYPE[prec]}
    assert {p.dtype for p in trainable.values()} == {torch.float32}  # trained tensors stay fp32 for the optimiser
    t.num_batches, t.batch_idx = 10, 0
    summary = t.forward_backward(next(iter(t.train_loader_x)))
    assert all(math.isfinite(v) for v in summary.values())
    after = dict(t.model.named_parameters())
    assert all(after[k].dtype == torch.float32 for k in trainable)
    assert not torch.equal(after[method.watched], trainable[method.watched])

    t.set_model_mode("eval")
    if method.probabilities:  # as its test() does first
        t.eval_text_features = t.template_text_features()
    out = t.model_inference(next(iter(t.test_loader))["img"][:4])
    assert torch.isfinite(out).all()
    if method.probabilities:
        assert torch.allclose(out.float().sum(-1), torch.ones(4), atol=1e-2)


@pytest.mark.parametrize("trainer", ["KgCoOp", "MaPLe", "PromptSRC"])
def test_invalid_precision_names_the_key(trainer, root, tiny_models, tmp_path):
    key = f"TRAINER.{trainer.upper()}.PREC"
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} must be one of .*'fp8'"):
        in_process_trainer(trainer, root, tmp_path, tiny_models, key, "fp8")
