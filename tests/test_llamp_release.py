"""LLaMP's losses and gradients against its authors' release (the references: release_reference.py)."""
import torch
import torch.nn.functional as F
from release_reference import compare, far, images, move_off_init, ref_image, scaled_cosines, stock_activations

from llamp.prompted_clip import lora_disabled


def test_llamp_losses_and_gradients_equal_the_release(tiny_models):
    """test_llamp_model pins the text layout (its release_text_features, reused here); this adds the image side
    (visual prompts, LoRA), every loss term and gradient. The release's teacher tower carries the LoRA being
    trained (TEACHER_USES_LORA True); its launch script: label smoothing 0, lambda_dist 2.5. Variant: the
    teacher without LoRA (our default)."""
    from test_llamp_model import RELEASE_CLASSNAMES, build, class_kv, release_text_features

    targets = torch.randn(len(RELEASE_CLASSNAMES), 48, generator=torch.Generator().manual_seed(2))
    clip, model = build(tiny_models, seed=3, classnames=RELEASE_CLASSNAMES, targets=targets, teacher_uses_lora=True,
                        lora_dropout=0.0)
    model.eval()
    params = move_off_init(model)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # in the release's clamp [0, 4.605]; at scale 100 fp32 rounding nears TOL
    kv = class_kv(tiny_models["llm"], RELEASE_CLASSNAMES)
    x, labels = images(), torch.tensor([2, 0, 3])
    losses, logits = model.losses(x, labels, kv)
    ours = {"text": model.text_features(kv), "image": model.image_features(x),
            "logits": logits, **losses}

    model.logit_scale.data = model.logit_scale.data.clamp(0, 4.605)  # the release, before each forward
    scale = model.logit_scale.exp()
    decoded = model.decoder(kv)  # [C, M, llm hidden]: the LLM side (tests/test_llm_decoder.py)
    with stock_activations(clip.model):
        text = release_text_features(clip, model, decoded)
        image = ref_image(clip.model, x, list(model.visual_prompts))
        with torch.no_grad():
            teacher = ref_image(clip.model, x)  # the LoRA'd tower, no visual prompts
            with lora_disabled(clip.model.vision_model):
                frozen = ref_image(clip.model, x)
    ref_logits = scaled_cosines(scale, image, text)

    def kl(teacher_image):
        teacher_logits = scaled_cosines(scale, teacher_image, targets)
        return 2.5 * F.kl_div(F.log_softmax(ref_logits, -1), F.log_softmax(teacher_logits, -1),
                              reduction="sum", log_target=True) / ref_logits.numel()

    def image_l1(teacher_image):
        return 10 * F.l1_loss(F.normalize(image, dim=-1), F.normalize(teacher_image, dim=-1))

    ref = {"text": text, "image": image, "logits": ref_logits, "ce": F.cross_entropy(ref_logits, labels),
           "text_l1": 25 * F.l1_loss(F.normalize(targets, dim=-1), F.normalize(text, dim=-1)),
           "image_l1": image_l1(teacher), "kl": kl(teacher)}
    compare(ours, ref, params, list(losses))
    far(losses["image_l1"] + losses["kl"], image_l1(frozen) + kl(frozen))
