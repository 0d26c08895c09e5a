"""CLIP's towers as every method uses them: the lean activation keeps CLIP's values and gradients."""
import torch
from transformers.activations import QuickGELUActivation

from llamp.prompted_clip import LeanQuickGELU, PromptedTextEncoder, PromptedVisionEncoder


def saved_bytes(fn, x):
    """Bytes autograd keeps for the backward of ``fn(x)`` (storages counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return out, sum(storages.values())


def test_lean_quick_gelu_has_clips_values_and_gradients_and_keeps_half_as_much():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 50, 64, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    weights = torch.randn(4, 50, 64, generator=gen, dtype=torch.float64)
    stock_out, stock_saved = saved_bytes(QuickGELUActivation(), x)
    (stock_grad,) = torch.autograd.grad((stock_out * weights).sum(), x)
    lean_out, lean_saved = saved_bytes(LeanQuickGELU(), x)
    (lean_grad,) = torch.autograd.grad((lean_out * weights).sum(), x)
    assert torch.equal(lean_out, stock_out)
    assert torch.allclose(lean_grad, stock_grad, rtol=1e-12, atol=1e-12)
    assert lean_saved == x.numel() * 8 and stock_saved >= 2 * lean_saved
    assert torch.autograd.gradcheck(LeanQuickGELU(), (x[:1, :3, :4].detach().requires_grad_(),))


def test_both_towers_use_it(tiny_clip):
    text, vision = PromptedTextEncoder(tiny_clip.model), PromptedVisionEncoder(tiny_clip.model)
    for layers in (text.layers, vision.layers):
        assert all(isinstance(layer.mlp.activation_fn, LeanQuickGELU) for layer in layers)
