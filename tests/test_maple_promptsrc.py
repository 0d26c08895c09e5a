"""MaPLe and PromptSRC: what distinguishes each method. (What every trainer does alike, end to end through
train.py included: test_trainers_common.py.)

MaPLe: vision prompts are maps of the text prompts (coupling), and identity-like
settings reproduce frozen CLIP. PromptSRC: each loss term equals a direct
computation, and the saved/evaluated prompts are the Gaussian-weighted mean of the
per-epoch prompts. Tiny CLIP: text width 64, vision width 96, 2 layers per tower.
"""
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F
from train_cli import as_trainer_names_it, in_process_trainer

from llamp.baselines.maple import MaPLeConfig, MaPLePromptLearner
from llamp.baselines.promptsrc import GaussianPromptAggregation, PromptSRCConfig, PromptSRCPromptLearner, gpa_weights
from llamp.class_prompts import MAX_CONTEXT_FROM_WORDS
from dassl.engine import TRAINER_REGISTRY

import trainers  # noqa: F401  (registers the trainers)
from llamp.errors import ConfigError, naming
from llamp.prompted_clip import PromptedVisionEncoder

TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a plain background."]
CLASSES = ["red circle", "green square", "blue triangle"]


def images(n=3, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


# ---- MaPLe ----------------------------------------------------------------------
def maple(clip, depth=2, **kw):
    torch.manual_seed(0)
    return MaPLePromptLearner(clip.model, clip.tokenizer, CLASSES, MaPLeConfig(prompt_depth=depth, **kw))


def test_maple_vision_prompts_change_when_only_the_text_prompts_change(clip):
    model = maple(clip)
    x = images()
    with torch.no_grad():
        before, image_before = [p.clone() for p in model.vision_prompts()], model.image_features(x)
        model.deep_ctx.add_(torch.randn_like(model.deep_ctx))  # a text-side parameter only
        after, image_after = model.vision_prompts(), model.image_features(x)
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])
    assert not torch.allclose(image_after, image_before)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"ctx", "deep_ctx", "couplings.0.weight", "couplings.0.bias", "couplings.1.weight",
                         "couplings.1.bias"}  # no free vision prompt: the vision side is the coupling

    model.zero_grad()
    model.image_features(x).square().sum().backward()  # a loss on the image tower alone
    assert model.ctx.grad.abs().sum() > 0 and model.deep_ctx.grad.abs().sum() > 0


def test_maple_identity_like_settings_reproduce_frozen_clip(clip):
    model = maple(clip, depth=2)
    n = model.config.n_ctx
    assert torch.equal(model.prompts.input_ids[0], clip.tokenize(["a photo of a red circle."])[0])
    words = clip.tokenizer("a photo", add_special_tokens=False).input_ids
    assert torch.equal(model.ctx, clip.model.text_model.embeddings.token_embedding.weight[words])

    with torch.no_grad():
        stock = clip.model.text_model(input_ids=model.prompts.input_ids, output_hidden_states=True)
        expected = clip.model.get_text_features(input_ids=model.prompts.input_ids).pooler_output
        # Entering layer 1 the context positions see only the start token and the context:
        # the same for every class, so one deep prompt can equal them.
        entering = stock.hidden_states[1][:, 1:1 + n]
        assert torch.allclose(entering, entering[:1].expand_as(entering), atol=1e-6)
        model.deep_ctx[0] = entering[0]
        assert torch.allclose(model.text_features(), expected, atol=1e-5)
        model.deep_ctx[0] += torch.randn_like(entering[0])  # (a constant shift would vanish in the layer norms)
        assert not torch.allclose(model.text_features(), expected, atol=1e-3)

        # Couplings [I; 0], bias 0: vision prompts are the text prompts zero-padded to the vision width.
        text_width, vision_width = model.text_encoder.width, model.vision_encoder.width
        for coupling in model.couplings:
            coupling.weight.copy_(torch.eye(vision_width, text_width))
            coupling.bias.zero_()
        padded = [F.pad(p, (0, vision_width - text_width)) for p in model.text_prompts()]
        assert all(torch.equal(v, p) for v, p in zip(model.vision_prompts(), padded))
        x = images()
        assert torch.allclose(model.image_features(x), PromptedVisionEncoder(clip.model)(x, padded), atol=1e-6)


def test_maple_bad_settings_name_their_field_and_the_trainer_its_key(clip):
    with pytest.raises(ConfigError, match="prompt_depth 3 must be in 1..2") as e:
        maple(clip, depth=3)  # the tiny towers have 2 layers
    assert as_trainer_names_it(e.value, "MaPLe").startswith("TRAINER.MAPLE.PROMPT_DEPTH 3 must be in 1..2")
    # Within the releases' word-init range, a context longer than the words would learn the class name.
    with pytest.raises(ConfigError, match="ctx_init 'a photo' has 2 tokens") as e:
        maple(clip, n_ctx=3, ctx_init="a photo")
    assert re.search(r"TRAINER.MAPLE.CTX_INIT 'a photo' has 2 tokens, fewer than TRAINER.MAPLE.N_CTX 3: lengthen "
                     r"it .* lower TRAINER.MAPLE.N_CTX to 2, or set TRAINER.MAPLE.CTX_INIT '' \(random init\)",
                     as_trainer_names_it(e.value, "MaPLe"))


def test_context_from_words_only_up_to_the_releases_limit(clip, capsys):
    assert MAX_CONTEXT_FROM_WORDS == 4  # the releases' hard-coded rule
    embed = clip.model.text_model.embeddings.token_embedding.weight
    words = clip.tokenizer("a photo of a", add_special_tokens=False).input_ids
    at_limit = maple(clip, n_ctx=4, ctx_init="a_photo_of_a")  # "_" is a space
    assert torch.equal(at_limit.ctx, embed[words])
    assert torch.equal(at_limit.prompts.input_ids[0], clip.tokenize(["a photo of a red circle."])[0])
    assert "not used" not in capsys.readouterr().out

    n = MAX_CONTEXT_FROM_WORDS + 1  # the words are not used: random context, placeholder text, one note
    with naming(TRAINER_REGISTRY.get("MaPLe").config_names()):  # as the trainer builds it
        beyond = maple(clip, n_ctx=n, ctx_init="a photo of a")
    note = capsys.readouterr().out.strip().splitlines()
    assert note == ["Note: TRAINER.MAPLE.CTX_INIT 'a photo of a' is not used: TRAINER.MAPLE.N_CTX 5 > 4, and the "
                    "releases initialise only up to 4 context tokens from words: the context starts at random"]
    random = maple(clip, n_ctx=n, ctx_init="")
    assert torch.equal(beyond.ctx, random.ctx) and torch.equal(beyond.prompts.input_ids, random.prompts.input_ids)
    assert torch.equal(beyond.prompts.input_ids[0], clip.tokenize(["X X X X X red circle."])[0])
    assert 0.015 < beyond.ctx.std().item() < 0.025  # N(0, 0.02^2)

    config = PromptSRCConfig(n_ctx_text=n, prompt_depth_text=2, prompt_depth_vision=2)
    PromptSRCPromptLearner(clip.model, clip.tokenizer, CLASSES, TEMPLATES, config)  # the library alone
    assert "Note: ctx_init 'a photo of a' is not used: n_ctx_text 5 > 4" in capsys.readouterr().out


# ---- PromptSRC --------------------------------------------------------------------
def test_promptsrc_loss_terms_equal_a_direct_computation(clip):
    config = PromptSRCConfig(prompt_depth_text=2, prompt_depth_vision=2, text_loss_weight=25,
                             image_loss_weight=10, kl_loss_weight=3.0)
    torch.manual_seed(0)
    model = PromptSRCPromptLearner(clip.model, clip.tokenizer, CLASSES, TEMPLATES, config)
    x, labels = images(4), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        model.deep_text.normal_(std=1.0)  # far from frozen CLIP, so every term is clearly non-zero
        model.visual_prompts.normal_(std=1.0)
        losses, logits = model.losses(x, labels)

        text = F.normalize(model.text_features(), dim=-1)
        image = F.normalize(model.image_features(x), dim=-1)
        # frozen CLIP computed independently: Hugging Face's own forward, templates averaged by hand
        frozen_image = F.normalize(clip.model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        per_template = torch.stack([clip.encode_text([t.format(c) for c in CLASSES]) for t in TEMPLATES])
        frozen_text = F.normalize(per_template.mean(0), dim=-1)
        scale = clip.model.logit_scale.exp()

    assert set(losses) == {"ce", "text_l1", "image_l1", "kl"}
    assert torch.allclose(logits, scale * image @ text.t(), atol=1e-5)
    ce = -logits.log_softmax(-1)[torch.arange(4), labels].mean()
    teacher = (scale * frozen_image @ frozen_text.t()).softmax(-1)
    kl = (teacher * (teacher.log() - logits.log_softmax(-1))).sum() / logits.numel()
    expected = {"ce": ce, "text_l1": 25 * (text - frozen_text).abs().mean(),
                "image_l1": 10 * (image - frozen_image).abs().mean(), "kl": 3.0 * kl}
    for name, value in expected.items():
        assert value > 1e-4, name
        assert torch.allclose(losses[name], value, rtol=1e-4, atol=1e-6), name


def test_gpa_weights_are_the_normalised_gaussian_density():
    def density(e, mean, std):
        return math.exp(-((e - mean) ** 2) / (2 * std ** 2)) / (std * math.sqrt(2 * math.pi))

    raw = [density(e, 15, 1) for e in range(1, 21)]
    assert gpa_weights(15, 1, 20) == pytest.approx([r / sum(raw) for r in raw], rel=1e-9)
    far = gpa_weights(100, 1, 5)  # every density underflows; the last epoch is still the nearest
    assert far == pytest.approx([0, 0, 0, 0, 1])
    with pytest.raises(ConfigError, match="gpa_std must be > 0") as e:
        gpa_weights(15, 0, 20)
    assert as_trainer_names_it(e.value, "PromptSRC").startswith("TRAINER.PROMPTSRC.GPA_STD must be > 0")


def test_promptsrc_saves_and_evaluates_the_gaussian_weighted_prompts(tiny_models, data_root, tmp_path):
    out = tmp_path / "run"
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAINER.PROMPTSRC.GPA_MEAN", "2", "TRAINER.PROMPTSRC.GPA_STD", "1",
            "TRAIN.CHECKPOINT_FREQ", "1")
    trainer = in_process_trainer("PromptSRC", data_root, out, tiny_models, *opts)

    def prompts_now():
        return {k: p.detach().clone() for k, p in trainer.model.named_parameters() if p.requires_grad}

    snapshots, tested = [], []
    add = trainer.gpa.add

    def record_and_add(epoch, tensors):
        snapshots.append(prompts_now())  # read from the model itself at the end of each epoch
        assert epoch == len(snapshots) - 1 and all(torch.equal(tensors[k], v) for k, v in snapshots[-1].items())
        add(epoch, tensors)

    trainer.gpa.add = record_and_add
    # what after_train evaluates (the evaluation itself is checked end to end in test_trainers_common.py)
    trainer.test = lambda *a: tested.append(prompts_now())
    trainer.train()

    # expected weights from mean 2, std 1 over epochs 1..3, computed here
    raw = [math.exp(-0.5 * (e - 2) ** 2) for e in (1, 2, 3)]
    weights = [r / sum(raw) for r in raw]
    assert len(snapshots) == 3 and set(snapshots[0]) == {"ctx", "deep_text", "visual_prompts"}
    expected = {k: sum(w * s[k] for w, s in zip(weights, snapshots)) for k in snapshots[0]}
    assert not torch.allclose(expected["ctx"], snapshots[-1]["ctx"], atol=1e-6)  # not just the last epoch

    assert len(tested) == 1
    saved = torch.load(out / "prompt_learner" / "model.pth.tar-3", weights_only=True)["state_dict"]
    for name, value in expected.items():
        assert torch.allclose(dict(trainer.model.named_parameters())[name], value, atol=1e-6), name
        assert torch.allclose(saved[name], value, atol=1e-6), name
        assert torch.allclose(tested[-1][name], value, atol=1e-6), name

    # Resuming after epoch 2 restores the running aggregate saved next to that checkpoint.
    (out / "prompt_learner" / "checkpoint").write_text("model.pth.tar-2\n")
    resumed = in_process_trainer("PromptSRC", data_root, out, tiny_models, *opts)
    assert resumed.resume_model_if_exist(str(out)) == 2
    assert sorted(resumed.gpa.epochs) == [0, 1]
    partial = resumed.gpa.aggregate()
    for name in expected:
        mean_so_far = (weights[0] * snapshots[0][name] + weights[1] * snapshots[1][name]) / (weights[0] + weights[1])
        assert torch.allclose(partial[name], mean_so_far, atol=1e-6), name


def test_gpa_without_every_epoch_renormalises_over_those_seen():
    gpa = GaussianPromptAggregation([0.2, 0.3, 0.5])
    gpa.add(1, {"p": torch.tensor([1.0])})
    gpa.add(2, {"p": torch.tensor([3.0])})
    assert not gpa.complete
    assert torch.allclose(gpa.aggregate()["p"], torch.tensor([(0.3 * 1 + 0.5 * 3) / 0.8]))
    with pytest.raises(ValueError):
        gpa.add(2, {"p": torch.tensor([3.0])})


# ---- the reference configs ----------------------------------------------------------
def test_reference_configs_merge_and_build_the_documented_settings():
    import train

    expected = {
        "MaPLe/vit_b16_base2new.yaml": ("MAPLE", 0.0035, 5, dict(N_CTX=2, PROMPT_DEPTH=9)),
        "MaPLe/vit_b16_few_shot.yaml": ("MAPLE", 0.0035, 5, dict(N_CTX=2, PROMPT_DEPTH=9)),
        "MaPLe/vit_b16_cross_datasets.yaml": ("MAPLE", 0.0026, 2, dict(N_CTX=2, PROMPT_DEPTH=3)),
        "PromptSRC/vit_b16_base2new.yaml": ("PROMPTSRC", 0.0025, 20, dict(PROMPT_DEPTH_TEXT=9, GPA_MEAN=15, GPA_STD=1)),
        "PromptSRC/vit_b16_few_shot.yaml": ("PROMPTSRC", 0.0025, 50, dict(GPA_MEAN=30, GPA_STD=30)),
        "PromptSRC/vit_b16_few_shot_gpa45.yaml": ("PROMPTSRC", 0.0025, 50, dict(GPA_MEAN=45, GPA_STD=5)),
        "PromptSRC/vit_b16_cross_datasets.yaml": ("PROMPTSRC", 0.0025, 20,
                                                  dict(PROMPT_DEPTH_VISION=3, GPA_MEAN=6, GPA_STD=10)),
    }
    for name, (node, lr, epochs, keys) in expected.items():
        trainer = name.split("/")[0]
        cfg = train.setup_cfg(train.parse_args([
            "--trainer", trainer, "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", os.path.join(train.os.path.dirname(train.__file__), "configs", "trainers", name)]))
        assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (
            "sgd", lr, epochs, 4), name
        assert cfg.TRAINER[node].PREC == "fp16"
        assert {k: cfg.TRAINER[node][k] for k in keys} == keys, name
