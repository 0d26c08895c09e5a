"""Zero-shot CLIP's logits against CLIP's own features, which also checks the hand-written towers of
release_reference.py against CLIP's own forward."""
import pytest
import torch
import torch.nn.functional as F
from release_reference import TOL, far, fresh_clip, images, ref_image, ref_text, template_features, tokenize
from train_cli import in_process_trainer


@pytest.mark.parametrize("ensemble", [False, True])
def test_zero_shot_clip_equals_clips_own_features(tiny_models, data_root, tmp_path_factory, ensemble):
    """The trainer's logits: CLIP's get_text_features of the template sentences normalised (ENSEMBLE: averaged,
    renormalised, the release's ZeroshotCLIP2) against get_image_features. The hand-written towers of the
    references above are checked against CLIP's own forward here. Variant: text read at token 76, not <EOT>."""
    trainer = in_process_trainer("ZeroshotCLIP", data_root, tmp_path_factory.mktemp("zs"), tiny_models,
                                 "TRAINER.ZEROSHOTCLIP.ENSEMBLE", str(ensemble), subset=None, epochs=None,
                                 print_freq=None)
    classnames, templates = list(trainer.dm.dataset.classnames), trainer.templates.templates
    assert (len(templates) > 1) if ensemble else (len(templates) == 1)
    x = images()
    ours = trainer.model_inference(x)

    clip = fresh_clip(tiny_models["clip"])
    model, tok = clip.model, clip.tokenizer
    with torch.no_grad():
        ids = torch.stack([tokenize(tok, [t.format(c.replace("_", " ")) for c in classnames]) for t in templates])
        text = torch.stack([model.get_text_features(input_ids=i).pooler_output for i in ids])  # [T, C, E]
        image = model.get_image_features(pixel_values=x).pooler_output
        by_hand = template_features(model, tok, templates, classnames)
        assert (by_hand - text).abs().max() < TOL
        assert (ref_image(model, x) - image).abs().max() < TOL
        last = torch.full((len(classnames),), 76)
        at_last = torch.stack([ref_text(model, model.text_model.embeddings.token_embedding(i), i, read_at=last)
                               for i in ids])

    def logits(per_template):
        weights = F.normalize(F.normalize(per_template, dim=-1).mean(0), dim=-1)  # [C, E]
        return model.logit_scale.exp() * F.normalize(image, dim=-1) @ weights.t()

    diff = (ours - logits(text)).abs().max().item()
    print(f"max |ours - release|: logits {diff:.1e}")
    assert diff < TOL
    far(ours, logits(at_last))
