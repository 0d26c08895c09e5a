"""CoOp, CoCoOp and KgCoOp: the prompt learners in-process on a tiny CLIP, CoOp's class-specific context
through its trainer, the reference configs. (What every trainer does alike: test_trainers_common.py.)"""
import glob
import os
import re

import pytest
import torch
import torch.nn.functional as F
from train_cli import REPO, as_trainer_names_it, error_line, in_process_trainer, run_train, train_argv

from llamp.baselines.cocoop import CoCoOp, CoCoOpConfig
from llamp.baselines.coop import CoOp, CoOpConfig
from llamp.baselines.kgcoop import KgCoOp, KgCoOpConfig
from llamp.errors import ConfigError

CLASSES = ["red circle", "green square", "blue triangle"]  # "red circle": 2 tokens
TEMPLATE = "a picture of a {}."  # Synthetic's zero-shot template
TEMPLATE_WORDS = "a picture of a"


def coop(clip, cls=CoOp, config=None, **fields):
    torch.manual_seed(0)
    config = config or CoOpConfig(**fields)
    return cls(clip.model, clip.tokenizer, CLASSES, config)


def images(n=2):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(1))


# ---- the prompt layout ----------------------------------------------------
@pytest.mark.parametrize("position,context_at,name_at", [
    ("end", [1, 2, 3, 4], [5, 6]),
    ("middle", [1, 2, 5, 6], [3, 4]),
    ("front", [3, 4, 5, 6], [1, 2]),
])
def test_context_and_class_tokens_sit_where_the_position_says(clip, position, context_at, name_at):
    model = coop(clip, n_ctx=4, class_token_position=position)
    prompts, tok = model.prompts, clip.tokenizer
    name_ids = tok("red circle", add_special_tokens=False).input_ids
    assert len(name_ids) == 2
    assert prompts.context_positions[0].tolist() == context_at and prompts.name_positions[0] == name_at
    ids = prompts.input_ids[0].tolist()
    assert ids[0] == tok.bos_token_id and ids[7] == tok(".", add_special_tokens=False).input_ids[0]
    assert ids[8] == tok.eos_token_id and prompts.eos_positions[0].item() == 8
    assert [ids[i] for i in name_at] == name_ids

    embeds = prompts.token_embeddings(model.text_encoder.token_embedding, prompts.class_context())  # [C, 77, W]
    assert torch.equal(embeds[0, context_at], model.prompts.context)
    assert torch.equal(embeds[0, name_at], model.text_encoder.token_embedding(torch.tensor(name_ids)))


def test_context_set_to_the_template_words_gives_stock_clip_features(clip):
    model = coop(clip, n_ctx=4)  # random context
    sentences = [TEMPLATE.format(c) for c in CLASSES]
    stock = clip.encode_text(sentences)
    assert (model.text_features() - stock).abs().max() > 1e-3
    words = clip.tokenizer(TEMPLATE_WORDS, add_special_tokens=False).input_ids
    with torch.no_grad():
        model.prompts.context.copy_(model.text_encoder.token_embedding(torch.tensor(words)))
    assert (model.text_features() - stock).abs().max() < 1e-5
    initialised = coop(clip, ctx_init=TEMPLATE_WORDS)  # the same through CTX_INIT
    assert initialised.prompts.n_ctx == 4
    assert (initialised.text_features() - stock).abs().max() < 1e-5


def test_bad_context_settings_name_their_field_and_the_trainer_its_key(clip):
    with pytest.raises(ConfigError, match="class_token_position must be one of") as e:
        coop(clip, class_token_position="left")
    assert as_trainer_names_it(e.value, "CoOp").startswith("TRAINER.COOP.CLASS_TOKEN_POSITION must be one of")
    with pytest.raises(ConfigError, match="n_ctx must be at least 1") as e:
        coop(clip, n_ctx=0)
    assert "TRAINER.COCOOP.N_CTX must be at least 1 (or give TRAINER.COCOOP.CTX_INIT)" in as_trainer_names_it(
        e.value, "CoCoOp")
    with pytest.raises(ConfigError, match=r"too long .* \(n_ctx, ctx_init\)") as e:
        coop(clip, cls=lambda *a: KgCoOp(*a, [TEMPLATE]), config=KgCoOpConfig(n_ctx=80))
    assert "(TRAINER.KGCOOP.N_CTX, TRAINER.KGCOOP.CTX_INIT)" in as_trainer_names_it(e.value, "KgCoOp")


# ---- CTX_INIT read as the releases read it --------------------------------
def test_underscored_init_learns_one_vector_per_word(clip):
    assert len(clip.tokenizer("a_photo_of_a", add_special_tokens=False).input_ids) == 7  # "_" is a token of its own
    underscored, spaced = coop(clip, ctx_init="a_photo_of_a"), coop(clip, ctx_init="a photo of a")
    words = clip.tokenizer("a photo of a", add_special_tokens=False).input_ids
    assert underscored.prompts.n_ctx == 4 and underscored.prompts.context.shape == (4, 64)
    assert torch.equal(underscored.prompts.context, underscored.text_encoder.token_embedding(torch.tensor(words)))
    assert torch.equal(underscored.prompts.input_ids, spaced.prompts.input_ids)
    assert torch.equal(underscored.text_features(), spaced.text_features())


def test_a_word_of_several_tokens_learns_the_first_tokens_and_keeps_the_rest_as_text(clip):
    init = "a photo of an axolotl"  # 5 words, 8 tokens: "axolotl" is 4
    tok = clip.tokenizer
    ids = tok(init, add_special_tokens=False).input_ids
    assert len(ids) == 8
    model = coop(clip, ctx_init=init.replace(" ", "_"))
    prompts = model.prompts
    assert prompts.n_ctx == 5 and prompts.context_positions[0].tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(prompts.context, model.text_encoder.token_embedding(torch.tensor(ids[:5])))
    sentence = tok(f"{init} red circle.").input_ids  # <SOT> init name . <EOT>
    assert prompts.input_ids[0, :len(sentence)].tolist() == sentence  # "lot", "l" stay as fixed text
    # As the release computes: the learned vectors in place of the first 5 tokens, everything else as text.
    stock = clip.encode_text([f"{init} {c}." for c in CLASSES])
    assert (model.text_features() - stock).abs().max() < 1e-5
    with torch.no_grad():
        prompts.context[4] += torch.randn(64)
    assert (model.text_features() - stock).abs().max() > 1e-3


@pytest.mark.parametrize("init,position,match", [
    ("a  photo of a", "end", r"TRAINER.COOP.CTX_INIT 'a  photo of a' has 5 words .* but 4 tokens.*single spaces"),
    ("a photo ", "end", r"TRAINER.COOP.CTX_INIT 'a photo ' has 3 words .*none leading or trailing"),
    ("a photo of an axolotl", "middle", r"TRAINER.COOP.CTX_INIT .* 8 tokens for 5 words: with "
                                        r"TRAINER.COOP.CLASS_TOKEN_POSITION middle .*CLASS_TOKEN_POSITION end"),
    ("an axolotl photo", "front", r"TRAINER.COOP.CTX_INIT .*CLASS_TOKEN_POSITION front"),
])
def test_inits_the_releases_would_misread_are_refused(clip, init, position, match):
    with pytest.raises(ConfigError, match="ctx_init") as e:
        coop(clip, ctx_init=init, class_token_position=position)
    assert re.search(match, as_trainer_names_it(e.value, "CoOp"))
    coop(clip, ctx_init="a photo of a", class_token_position=position)  # one token per word: any position


# ---- class-specific context -----------------------------------------------
def test_csc_gives_each_class_its_own_context(clip):
    unified = coop(clip, n_ctx=4)
    assert unified.prompts.context.shape == (4, 64)
    csc = coop(clip, n_ctx=4, class_specific=True)
    assert csc.prompts.context.shape == (3, 4, 64)  # [classes, n_ctx, width]
    assert not torch.equal(csc.prompts.context[0], csc.prompts.context[1])
    # class 1's prompt reads class 1's context only
    before = csc.text_features().detach()
    with torch.no_grad():  # (not a constant shift: CLIP's layer norms would cancel it)
        csc.prompts.context[1] += torch.randn(4, 64)
    changed = (csc.text_features().detach() - before).abs().amax(-1)
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


@pytest.mark.parametrize("cls,config", [(CoOp, CoOpConfig), (CoCoOp, CoCoOpConfig),
                                        (lambda *a: KgCoOp(*a, [TEMPLATE]), KgCoOpConfig)])
def test_csc_with_init_words_is_refused_naming_both_keys(clip, cls, config):
    # The releases ignore CSC when CTX_INIT is given (one shared context): refused rather than guessed.
    with pytest.raises(ConfigError, match="class_specific True with ctx_init") as e:
        coop(clip, cls=cls, config=config(ctx_init="a photo of a", class_specific=True))
    trainer = {CoOpConfig: "CoOp", CoCoOpConfig: "CoCoOp", KgCoOpConfig: "KgCoOp"}[config]
    key = f"TRAINER.{trainer.upper()}"
    assert re.search(rf"{key}.CSC True with {key}.CTX_INIT 'a photo of a': set {key}.CSC False .*shared context.* "
                     rf"or {key}.CTX_INIT '' for class-specific", as_trainer_names_it(e.value, trainer))
    assert coop(clip, cls=cls, config=config(ctx_init="", n_ctx=2, class_specific=True)).prompts.context.dim() == 3


# ---- CoCoOp ---------------------------------------------------------------
def test_cocoop_context_and_text_features_depend_on_the_image(clip):
    model = coop(clip, cls=CoCoOp, config=CoCoOpConfig(ctx_init=TEMPLATE_WORDS))
    assert model.meta_net.linear1.in_features == 48 and model.meta_net.linear1.out_features == 3  # 48 // 16
    image = F.normalize(model.image_features(images(2)).float(), dim=-1)
    shifts = model.context_shift(image)  # [2, width]
    assert shifts.shape == (2, 64) and not torch.allclose(shifts[0], shifts[1])
    contexts = [model.prompts.class_context(s) for s in shifts]
    assert not torch.allclose(contexts[0], contexts[1])
    text = model.image_text_features(image)  # [images, classes, embed]
    assert text.shape == (2, 3, 48) and not torch.allclose(text[0], text[1])
    assert torch.allclose(model.logits(image, text), model(images(2)), atol=1e-6)

    with torch.no_grad():  # a meta-net that outputs zero leaves plain CoOp
        model.meta_net.linear2.weight.zero_()
        model.meta_net.linear2.bias.zero_()
    text = model.image_text_features(image)
    plain = F.normalize(model.text_features().float(), dim=-1)
    assert torch.allclose(text[0], plain) and torch.allclose(text[1], plain)


# ---- KgCoOp ---------------------------------------------------------------
def test_kgcoop_regulariser_is_zero_exactly_when_the_prompts_are_the_hand_crafted_ones(clip):
    model = coop(clip, cls=lambda *a: KgCoOp(*a, [TEMPLATE]), config=KgCoOpConfig(ctx_init=TEMPLATE_WORDS))
    losses, _ = model.losses(images(2), torch.tensor([0, 1]))
    assert losses["kg"].item() == 0.0 and losses["ce"].item() > 0
    stock = F.normalize(clip.encode_text([TEMPLATE.format(c) for c in CLASSES]), dim=-1)
    assert torch.allclose(model.handcrafted, stock, atol=1e-6)

    with torch.no_grad():
        model.prompts.context[0] += 0.1 * torch.randn(64)
    text = F.normalize(model.text_features().float(), dim=-1)
    expected = 4.0 * ((text - stock) ** 2).sum(-1).mean()
    losses, _ = model.losses(images(2), torch.tensor([0, 1]))
    assert losses["kg"].item() > 1e-6 and losses["kg"].item() == pytest.approx(expected.item(), rel=1e-4)

    other_words = coop(clip, cls=lambda *a: KgCoOp(*a, [TEMPLATE]), config=KgCoOpConfig(ctx_init="a photo of a"))
    assert other_words.losses(images(2), torch.tensor([0, 1]))[0]["kg"].item() > 1e-6


# ---- class-specific context through the trainer ---------------------------
CSC = ("TRAINER.COOP.CSC", "True", "TRAINER.COOP.CTX_INIT", "")  # init words would be refused with CSC


def test_class_specific_context_refuses_other_classes(tiny_models, data_root, tmp_path):
    refused = run_train(*train_argv("CoOp", data_root, tmp_path / "init", tiny_models, "TRAINER.COOP.CSC", "True",
                                    "TRAINER.COOP.CTX_INIT", "a photo of a"), check=False)
    assert re.fullmatch(r"error: TRAINER.COOP.CSC True with TRAINER.COOP.CTX_INIT 'a photo of a': set "
                        r"TRAINER.COOP.CSC False .* or TRAINER.COOP.CTX_INIT '' for class-specific contexts "
                        r"\(random init\)", error_line(refused))
    base = in_process_trainer("CoOp", data_root, tmp_path / "csc", tiny_models, *CSC)
    assert base.model.prompts.context.shape == (18, 4, 64)
    base.save_model(1, str(tmp_path / "csc"))
    same = in_process_trainer("CoOp", data_root, tmp_path / "again", tiny_models, *CSC)
    same.load_model(str(tmp_path / "csc"), epoch=2)  # the classes it was trained on: fine
    assert torch.equal(same.model.prompts.context, base.model.prompts.context)

    new = in_process_trainer("CoOp", data_root, tmp_path / "new", tiny_models, *CSC, subset="new")
    assert new.model.prompts.context.shape == base.model.prompts.context.shape  # same count, other classes
    with pytest.raises(ConfigError, match=r"TRAINER.COOP.CSC is True.*do not transfer"):
        new.load_model(str(tmp_path / "csc"), epoch=2)


# ---- the reference configs ------------------------------------------------
TRAINERS = {"CoOp": "COOP", "CoCoOp": "COCOOP", "KgCoOp": "KGCOOP"}  # trainer: its config node
PUBLISHED = {  # file: (batch, epochs, lr, n_ctx, ctx_init)
    "CoOp/vit_b16_base2new.yaml": (32, 200, 0.002, 4, "a photo of a"),
    "CoOp/vit_b16_base2new_imagenet.yaml": (32, 50, 0.002, 4, "a photo of a"),
    "CoOp/vit_b16_few_shot.yaml": (32, 200, 0.002, 16, ""),
    "CoOp/vit_b16_few_shot_ep100.yaml": (32, 100, 0.002, 16, ""),
    "CoOp/vit_b16_few_shot_ep50.yaml": (32, 50, 0.002, 16, ""),
    "CoCoOp/vit_b16_base2new.yaml": (1, 10, 0.002, 4, "a photo of a"),
    "CoCoOp/vit_b16_few_shot.yaml": (1, 10, 0.002, 4, "a photo of a"),
    "KgCoOp/vit_b16_base2new.yaml": (128, 100, 0.002, 4, "a photo of a"),
    "KgCoOp/vit_b16_few_shot.yaml": (128, 100, 0.002, 4, "a photo of a"),
}


def test_every_config_file_loads_and_the_reference_ones_hold_the_published_values(tmp_path):
    import train

    files = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*CoOp", "*.yaml")))
    assert {os.path.relpath(f, os.path.join(REPO, "configs", "trainers")) for f in files} >= set(PUBLISHED)
    for path in files:
        trainer = os.path.basename(os.path.dirname(path))
        cfg = train.setup_cfg(train.parse_args(["--root", str(tmp_path), "--trainer", trainer, "--config-file", path,
                                                "--dataset-config-file", "configs/datasets/synthetic.yaml"]))
        c = cfg.TRAINER[TRAINERS[trainer]]
        name = os.path.relpath(path, os.path.join(REPO, "configs", "trainers"))
        if name.endswith("demo.yaml"):
            assert c.PREC == "fp32" and cfg.DATALOADER.NUM_WORKERS == 0
            continue
        batch, epochs, lr, n_ctx, init = PUBLISHED[name]
        assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.LR) == (batch, epochs, lr), name
        context = (c.N_CTX, c.CTX_INIT, c.CSC, c.CLASS_TOKEN_POSITION)
        assert (cfg.OPTIM.NAME, cfg.OPTIM.LR_SCHEDULER, *context) == ("sgd", "cosine", n_ctx, init, False, "end"), name
        assert c.PREC == "fp16", name
        if trainer == "KgCoOp":
            assert c.WEIGHT == 4.0, name  # the release's 8.0 on (1 - cos)
