"""Template-averaged class features (llamp/class_features.py): the two conventions, and one template."""
import pytest
import torch
import torch.nn.functional as F

from llamp.class_features import MEAN_OF_NORMALISED, MEAN_OF_RAW, average_over_templates, template_class_features


def features(*scales):
    """Features [T, 2, 4] of T templates whose norms differ (scales), so the two conventions part."""
    torch.manual_seed(0)
    return torch.stack([s * torch.randn(2, 4) for s in scales])


def test_the_two_conventions_are_the_ones_their_names_say():
    f = features(1.0, 10.0, 0.1)
    unit = F.normalize(f, dim=-1)
    assert torch.allclose(average_over_templates(f, MEAN_OF_NORMALISED), F.normalize(unit.mean(0), dim=-1))
    assert torch.allclose(average_over_templates(f, MEAN_OF_RAW), F.normalize(f.mean(0), dim=-1))
    assert not torch.allclose(average_over_templates(f, MEAN_OF_NORMALISED), average_over_templates(f, MEAN_OF_RAW),
                              atol=1e-3)
    with pytest.raises(ValueError, match="average must be one of"):
        average_over_templates(f, "median")


def test_one_template_is_normalised_once_only_when_asked():
    one = 3.0 * torch.randn(1, 8, 512, generator=torch.Generator().manual_seed(0))
    once = F.normalize(one[0], dim=-1)
    twice = F.normalize(once, dim=-1)
    assert not torch.equal(once, twice)  # renormalising a unit vector rounds some components differently
    assert torch.equal(average_over_templates(one, MEAN_OF_NORMALISED, renormalise_single=False), once)
    assert torch.equal(average_over_templates(one, MEAN_OF_NORMALISED), twice)


def test_every_template_is_filled_with_every_class_name():
    seen = []

    def encode(texts):
        seen.append(texts)
        return torch.tensor([[float(len(t)), 1.0] for t in texts])

    out = template_class_features(encode, ["red_circle", "cat"], ["a {}.", "itap of the {}"], MEAN_OF_RAW)
    assert seen == [["a red circle.", "a cat."], ["itap of the red circle", "itap of the cat"]]
    raw = torch.tensor([[[13.0, 1.0], [6.0, 1.0]], [[22.0, 1.0], [15.0, 1.0]]])
    assert torch.allclose(out, F.normalize(raw.mean(0), dim=-1))
