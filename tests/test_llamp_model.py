"""The LLaMP model on tiny models: equivalences with stock CLIP, gradients, the loss terms."""
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaForCausalLM

from llamp.clip_loading import load_clip
from llamp.llm_decoder import load_decoder_tail
from llamp.model import LLaMP, LLaMPConfig, compute_losses
from llamp.prompted_clip import PromptedTextEncoder

CLASSNAMES = ["red circle", "blue square", "green triangle"]
SMALL = dict(num_llm_tokens=3, prompt_depth=2, num_visual_prompts=2, visual_prompt_depth=2, lora_layers=(1,))


def class_kv(llm_path, classnames):
    """A stand-in knowledge cache: K/V of the last LLM layer over one sentence per class (left-padded)."""
    model = LlamaForCausalLM.from_pretrained(llm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    batch = tokenizer([f"The {c} appears as a bright shape" for c in classnames], return_tensors="pt", padding=True)
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = model(**batch, position_ids=positions, use_cache=True).cache
    last = model.config.num_hidden_layers - 1
    return [cache.layers[last].keys], [cache.layers[last].values], batch.attention_mask


def build(tiny_models, seed=0, **overrides):
    torch.manual_seed(seed)
    clip = load_clip("ViT-B/16", tiny_models["clip"])
    tail = load_decoder_tail(tiny_models["llm"], 1)
    return clip, LLaMP(clip.model, clip.tokenizer, tail, CLASSNAMES, LLaMPConfig(**{**SMALL, **overrides}))


@pytest.fixture(scope="module")
def kv(tiny_models):
    return class_kv(tiny_models["llm"], CLASSNAMES)


def test_text_prompts_equal_to_token_embeddings_give_stock_clip(tiny_models, kv):
    """Context = "a photo of a" embeddings, LLM slots = the slot token's embedding, depth 1: stock CLIP."""
    clip, model = build(tiny_models, prompt_depth=1)
    slot_id = clip.tokenizer("x", add_special_tokens=False).input_ids[0]
    slot_embedding = model.text_encoder.token_embedding(torch.tensor([slot_id]))  # [1, width]
    with torch.no_grad():
        model.projections[0].weight.zero_()
        model.projection_bias[0].copy_(slot_embedding.expand(model.config.num_llm_tokens, -1))
        ours = model.text_features(*kv)
        texts = [f"a photo of a {c}." + " x" * model.config.num_llm_tokens for c in CLASSNAMES]
        stock = clip.model.get_text_features(input_ids=clip.tokenize(texts)).pooler_output
    assert (ours - stock).abs().max() < 1e-5


def test_deep_injection_of_the_stock_hidden_states_changes_nothing(tiny_models):
    """Replacing tokens at layer 1 by the values they have there anyway reproduces stock CLIP."""
    clip = load_clip("ViT-B/16", tiny_models["clip"])
    encoder = PromptedTextEncoder(clip.model)
    ids = clip.tokenize([f"a photo of a {c}." for c in CLASSNAMES])
    eos = (ids == clip.tokenizer.eos_token_id).int().argmax(-1)
    captured = {}

    def capture(module, args):
        captured.setdefault("h", args[0].clone())  # returns None: the inputs are left as they are

    hook = encoder.layers[1].register_forward_pre_hook(capture)
    with torch.no_grad():
        stock = encoder(encoder.token_embedding(ids), eos)
        hook.remove()
        positions = torch.cat([torch.arange(1, 5).expand(len(CLASSNAMES), -1), (eos - 1)[:, None]], dim=1)
        values = torch.gather(captured["h"], 1, positions[..., None].expand(-1, -1, captured["h"].shape[-1]))
        injected = encoder(encoder.token_embedding(ids), eos, {1: [(positions, values)]})
        noise = torch.randn_like(values)  # (a constant shift would vanish in the layer norm)
        other = encoder(encoder.token_embedding(ids), eos, {1: [(positions, values + noise)]})
    assert (stock - clip.model.get_text_features(input_ids=ids).pooler_output).abs().max() < 1e-5
    assert (injected - stock).abs().max() < 1e-6
    assert (other - stock).abs().max() > 1e-3  # an injection does act


def test_image_features_without_prompts_and_with_zero_lora_are_stock_clip(tiny_models):
    clip, model = build(tiny_models, visual_prompt_depth=0)
    model.eval()
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        stock = clip.model.get_image_features(pixel_values=images).pooler_output
        assert (model.image_features(images) - stock).abs().max() < 1e-5  # LoRA B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
        assert (model.image_features(images) - stock).abs().max() > 1e-3
        assert (model.teacher_image_features(images) - stock).abs().max() < 1e-5  # teacher: LoRA off
    _, release = build(tiny_models, visual_prompt_depth=0, teacher_uses_lora=True)
    release.eval()
    with torch.no_grad():
        for name, p in release.named_parameters():
            if "lora_B" in name:
                p.normal_()
        assert (release.teacher_image_features(images) - release.image_features(images)).abs().max() < 1e-6


def test_one_step_changes_only_trainable_tensors_and_all_get_gradients(tiny_models, kv):
    _, model = build(tiny_models)
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and "decoder.tokens" in trainable
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    images, labels = torch.randn(4, 3, 224, 224), torch.tensor([0, 1, 2, 0])
    targets = F.normalize(torch.randn(len(CLASSNAMES), model.embed_dim), dim=-1)
    got_grad = set()
    for _ in range(2):  # lora_A's gradient is zero while lora_B is still zero: take two steps
        optimizer.zero_grad()
        losses, _ = model.losses(images, labels, *kv, targets)
        sum(losses.values()).backward()
        got_grad |= {n for n, p in trainable.items() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    assert got_grad == set(trainable), sorted(set(trainable) - got_grad)
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def test_loss_terms_match_a_direct_computation():
    torch.manual_seed(0)
    text, targets = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    image, teacher = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    labels, scale = torch.tensor([0, 4, 2]), torch.tensor(100.0)
    losses, logits = compute_losses(text, image, teacher, targets, labels, scale, 25.0, 10.0, 2.5)

    student = [[100.0 * float(image[b] @ text[c]) for c in range(5)] for b in range(3)]
    teach = [[100.0 * float(teacher[b] @ targets[c]) for c in range(5)] for b in range(3)]

    def log_softmax(row):
        m = max(row)
        z = sum(torch.exp(torch.tensor(x - m)).item() for x in row)
        return [x - m - torch.log(torch.tensor(z)).item() for x in row]

    ce = -sum(log_softmax(student[b])[int(labels[b])] for b in range(3)) / 3
    kl = sum(torch.exp(torch.tensor(lt)).item() * (lt - ls)
             for b in range(3) for lt, ls in zip(log_softmax(teach[b]), log_softmax(student[b]))) / 15
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-4)
    assert losses["text_l1"].item() == pytest.approx(25.0 * (text - targets).abs().mean().item(), rel=1e-5)
    assert losses["image_l1"].item() == pytest.approx(10.0 * (image - teacher).abs().mean().item(), rel=1e-5)
    assert losses["kl"].item() == pytest.approx(2.5 * kl, rel=1e-4)
    assert torch.allclose(logits, torch.tensor(student))


def test_inference_averages_per_template_softmax_of_raw_cosines(tiny_models):
    _, model = build(tiny_models)
    model.eval()
    images = torch.randn(2, 3, 224, 224)
    text = F.normalize(torch.randn(3, len(CLASSNAMES), model.embed_dim), dim=-1)
    with torch.no_grad():
        probs = model.class_probabilities(images, text)
        image = F.normalize(model.image_features(images), dim=-1)
    expected = torch.stack([(image @ text[t].t()).softmax(-1) for t in range(3)]).mean(0)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(2))


def test_class_names_too_long_for_the_context_are_refused(tiny_models):
    from llamp.errors import ConfigError

    clip = load_clip("ViT-B/16", tiny_models["clip"])
    tail = load_decoder_tail(tiny_models["llm"], 1)
    with pytest.raises(ConfigError, match="too long"):
        LLaMP(clip.model, clip.tokenizer, tail, ["word " * 70], LLaMPConfig(**SMALL))
