"""The LLaMP model on tiny models: equivalences with stock CLIP, gradients, the loss terms."""
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaForCausalLM

from llamp.cache_kv import CacheKV
from llamp.clip.loading import load_clip
from llamp.llm.tail import load_decoder_tail
from llamp.model import LLaMPConfig, LLaMPModel
from llamp.prompted_clip import PromptedTextEncoder
from llamp.self_regulation import self_regulating_losses

CLASSNAMES = ["red circle", "blue square", "green triangle"]
SMALL = dict(num_llm_tokens=3, prompt_depth=2, num_visual_prompts=2, visual_prompt_depth=2, lora_layers=(1,))


def class_kv(llm_path, classnames, sentence="The {} appears as a bright shape"):
    """A stand-in knowledge cache: K/V of the last LLM layer over one sentence per class (left-padded)."""
    model = LlamaForCausalLM.from_pretrained(llm_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    batch = tokenizer([sentence.format(c) for c in classnames], return_tensors="pt", padding=True)
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(**batch, position_ids=positions, use_cache=True)
    cache = out.cache if "cache" in out else out.past_key_values  # renamed during transformers 5.x
    last = model.config.num_hidden_layers - 1
    return CacheKV([cache.layers[last].keys], [cache.layers[last].values], batch.attention_mask, [last])


def random_targets(classnames, embed_dim=48, seed=5):
    """Stand-in distillation targets ``[C, embed]`` (their own stream: the model's init is left alone)."""
    return torch.randn(len(classnames), embed_dim, generator=torch.Generator().manual_seed(seed))


def build(tiny_models, seed=0, classnames=CLASSNAMES, targets=None, **overrides):
    torch.manual_seed(seed)
    clip = load_clip("ViT-B/16", tiny_models["clip"])
    tail = load_decoder_tail(tiny_models["llm"], 1)
    targets = random_targets(classnames) if targets is None else targets
    return clip, LLaMPModel(clip.model, clip.tokenizer, tail, classnames, LLaMPConfig(**{**SMALL, **overrides}),
                            targets)


@pytest.fixture(scope="module")
def kv(tiny_models):
    return class_kv(tiny_models["llm"], CLASSNAMES)


# Names that tokenise to different lengths, so the layout's per-class positions are exercised.
RELEASE_CLASSNAMES = ["cat", "red_circle", "banded gecko lizard", "ring-tailed lemur of madagascar"]


def release_text_features(clip, model, decoded):
    """The release's class text features, built by hand from CLIP's own modules.

    Per class: <SOT> (token + position 0); the learned context as it is (its
    positions are inside it); the name tokens with their natural positions; the
    M layer-0 LLM prompts without positions; <EOT> with its position in
    "a photo of a {c}". Then CLIP's layers with the deep context and LLM
    prompts replacing those tokens, final norm and projection at <EOT>.
    """
    text = clip.model.text_model
    token, position = text.embeddings.token_embedding, text.embeddings.position_embedding
    depth = model.config.prompt_depth
    prompts = [model.projections[d](decoded) + model.projection_bias[d] for d in range(depth)]  # [C, M, w]
    contexts = [model.context, *model.deep_context]
    features = []
    for c, name in enumerate(RELEASE_CLASSNAMES):
        ids = clip.tokenizer("a photo of a " + name.replace("_", " ")).input_ids  # <SOT> a photo of a name <EOT>
        n_name = len(ids) - 6
        sot = token(torch.tensor(ids[:1])) + position(torch.tensor([0]))
        name_tokens = token(torch.tensor(ids[5:-1])) + position(torch.arange(5, 5 + n_name))
        eot = token(torch.tensor(ids[-1:])) + position(torch.tensor([len(ids) - 1]))
        hidden = torch.cat([sot, contexts[0], name_tokens, prompts[0][c], eot])[None]  # [1, seq, width]
        seq = hidden.shape[1]
        mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
        for i, layer in enumerate(text.encoder.layers):
            if 0 < i < depth:
                m = prompts[i].shape[1]
                hidden = torch.cat([hidden[:, :1], contexts[i][None], hidden[:, 5:5 + n_name],
                                    prompts[i][c][None], hidden[:, -1:]], dim=1)
                assert hidden.shape[1] == 6 + n_name + m
            hidden = layer(hidden, mask)
        features.append(clip.model.text_projection(text.final_layer_norm(hidden[0, -1])))
    return torch.stack(features)


def test_text_features_follow_the_release_layout(tiny_models):
    clip, model = build(tiny_models, seed=3, prompt_depth=2, classnames=RELEASE_CLASSNAMES)
    model.eval()
    lengths = {len(clip.tokenizer(n.replace("_", " "), add_special_tokens=False).input_ids)
               for n in RELEASE_CLASSNAMES}
    assert len(lengths) >= 3  # names of different token lengths
    with torch.no_grad():  # move every learned tensor off its init, so nothing matches by accident
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        kv = class_kv(tiny_models["llm"], RELEASE_CLASSNAMES)
        decoded = model.decoder(kv)  # [C, M, hidden]
        expected = release_text_features(clip, model, decoded)
        ours = model.text_features(kv)
    assert (ours - expected).abs().max() < 1e-5
    # the tower runs over the longest class's layout only, not CLIP's 77 tokens
    longest = max(len(clip.tokenizer("a photo of a " + n.replace("_", " ")).input_ids) for n in RELEASE_CLASSNAMES)
    assert model.prompts.input_ids.shape[1] == longest + model.config.num_llm_tokens < 77


def test_context_starts_as_the_init_words_with_their_positions(tiny_models):
    """At init, <SOT> + context equal stock CLIP's first five layer-0 vectors of "a photo of a ..."."""
    clip, model = build(tiny_models)
    embeddings = clip.model.text_model.embeddings
    ids = clip.tokenize(["a photo of a cat"])
    with torch.no_grad():
        stock = embeddings(input_ids=ids)[0, 1:5]  # token + position embeddings at positions 1..4
    assert torch.equal(model.context.detach(), stock)


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
    got_grad = set()
    for _ in range(2):  # lora_A's gradient is zero while lora_B is still zero: take two steps
        optimizer.zero_grad()
        losses, _ = model.losses(images, labels, kv)
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
    losses, logits = self_regulating_losses(text, image, teacher, targets, labels, scale, 25.0, 10.0, 2.5)

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


def test_template_ensemble_averages_each_templates_softmax_over_its_own_cache(tiny_models, kv):
    """The model's own inference, without Dassl: text features per query template's cache, then the mean over
    templates of the per-template softmax of raw cosines."""
    _, model = build(tiny_models, seed=4)
    model.eval()
    other = class_kv(tiny_models["llm"], CLASSNAMES, "Describe the {} in a few words")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        text = model.template_text_features(iter([kv, other]))  # consumed one template at a time
        per_template = [F.normalize(model.text_features(cache), dim=-1) for cache in (kv, other)]
        probs = model.class_probabilities(images, text)
        image = F.normalize(model.image_features(images), dim=-1)
    assert text.shape == (2, len(CLASSNAMES), model.embed_dim)
    assert torch.allclose(text, torch.stack(per_template), atol=1e-6)
    assert (text[0] - text[1]).abs().max() > 1e-3  # the two caches give two different templates
    expected = ((image @ per_template[0].t()).softmax(-1) + (image @ per_template[1].t()).softmax(-1)) / 2
    assert torch.allclose(probs, expected, atol=1e-6)
    assert not torch.allclose(probs, (image @ per_template[0].t()).softmax(-1), atol=1e-6)


def test_class_names_too_long_for_the_context_are_refused(tiny_models):
    from llamp.errors import ConfigError

    clip = load_clip("ViT-B/16", tiny_models["clip"])
    tail = load_decoder_tail(tiny_models["llm"], 1)
    with pytest.raises(ConfigError, match="too long"):
        LLaMPModel(clip.model, clip.tokenizer, tail, ["word " * 70], LLaMPConfig(**SMALL),
                   random_targets(["word " * 70]))


def test_logit_scale_parameter_is_clamped_and_comes_back(tiny_models):
    """Pushed up for many steps, the parameter itself stays at the ceiling, so it can come down again."""
    from llamp.model import MAX_LOGIT_SCALE

    _, model = build(tiny_models)
    optimizer = torch.optim.SGD([model.logit_scale], lr=1e-4)  # d scale / d param = scale: ~0.01 a step
    seen = []
    for step in range(60):
        direction = -1.0 if step < 40 else 1.0  # first push the scale up, then pull it down
        scale = model.scale()  # clamps the parameter before it is used, as every forward does
        seen.append(model.logit_scale.item())
        optimizer.zero_grad()
        (direction * scale).sum().backward()
        optimizer.step()
    ceiling = torch.tensor(MAX_LOGIT_SCALE).item()  # 4.605 as the float32 parameter holds it
    assert max(seen) <= ceiling
    assert seen[39] == ceiling  # it reached the ceiling while pushed up ...  # it reached the ceiling while pushed up ...
    assert seen[-1] < ceiling - 0.05  # ... and moved down as soon as the gradient reversed
    assert MAX_LOGIT_SCALE == 4.605


def test_prompt_initialisation_bounds(tiny_models):
    """Kaiming-uniform (a = sqrt 5) bounds are 1/sqrt(fan-in): per layer for the text prompt tensors
    (fan-in = text width), over the whole tensor for the LLM tokens and the visual prompts."""
    _, model = build(tiny_models, num_llm_tokens=8, prompt_depth=2, num_visual_prompts=4, visual_prompt_depth=2)
    width = model.text_encoder.width

    def spans(tensor, bound):  # inside the bound, and filling most of it (so a smaller fan-in's bound is excluded)
        return tensor.abs().max().item() <= bound and tensor.abs().max().item() > 0.9 * bound

    for layer in model.projection_bias:  # [M, width] each
        assert spans(layer, width ** -0.5)
    for layer in model.deep_context:  # [4, width] each
        assert spans(layer, width ** -0.5)
    assert spans(model.decoder.tokens, model.decoder.tokens.shape[1] ** -0.5)  # [M, llm_hidden]
    depth, n, vision_width = model.visual_prompts.shape
    assert spans(model.visual_prompts, (n * vision_width) ** -0.5)  # one 3-D tensor, as in the release
