"""Exact compute shortcuts of the tracing engine (locedit.kernels)."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import FastGELUActivation, NewGELUActivation

from locedit.adapters import module_for
from locedit.kernels import FusedTanhGELU, fused_activations, mlp_only_where


@pytest.mark.parametrize("unfused", [NewGELUActivation, FastGELUActivation])
def test_fused_gelu_is_the_same_function(unfused):
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(10_000) * 3])
    # The README's claim: within 5e-7 (absolute) of transformers' kernels over [-30, 30].
    torch.testing.assert_close(FusedTanhGELU()(x), unfused()(x), rtol=0, atol=5e-7)
    assert FusedTanhGELU()(x).dtype == x.dtype


@pytest.mark.parametrize("unfused", [NewGELUActivation, FastGELUActivation])
def test_fused_gelu_gradient_is_the_same(unfused):
    """Under autograd (the editing engine) the fused kernel's values and gradients are as close
    to the float64 formula as ``transformers``' own (whose 1 + tanh(z) cancels for x < -4)."""
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(10_000) * 3])
    w = torch.randn_like(x)

    def grad(fn, dtype):
        v = x.to(dtype).requires_grad_(True)
        y = fn(v)
        (y * w.to(dtype)).sum().backward()
        return y.detach().double(), v.grad.double()

    y64, g64 = grad(unfused(), torch.float64)
    y_fused, g_fused = grad(FusedTanhGELU(), torch.float32)
    y_ref, g_ref = grad(unfused(), torch.float32)
    assert (y_fused - y64).abs().max() <= max(float((y_ref - y64).abs().max()), 1e-6)
    assert (g_fused - g64).abs().max() <= max(float((g_ref - g64).abs().max()), 1e-6)


def test_fused_activations_swaps_and_restores(tiny_gpt2):
    ids = torch.tensor([[5, 17, 42, 9, 3, 11]])
    before = [type(m) for m in tiny_gpt2.modules()]
    ref = tiny_gpt2(input_ids=ids).logits
    with fused_activations(tiny_gpt2) as n:
        assert n == tiny_gpt2.config.n_layer  # one gelu_new per block
        assert not any(isinstance(m, NewGELUActivation) for m in tiny_gpt2.modules())
        fused = tiny_gpt2(input_ids=ids).logits
    assert [type(m) for m in tiny_gpt2.modules()] == before
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="inside"):
        with fused_activations(tiny_gpt2):
            raise RuntimeError("inside")
    assert [type(m) for m in tiny_gpt2.modules()] == before  # restored after an error too


def test_mlp_only_where_computes_the_needed_positions_only(tiny_gpt2):
    mlp = module_for(tiny_gpt2, "mlp", 1)
    x = torch.randn(3, 5, tiny_gpt2.config.n_embd)
    full = mlp(x)
    need = torch.zeros(3, 5, dtype=torch.bool)
    need[0, 4], need[1, 1:3], need[2] = True, True, True
    seen = []
    first_linear = next(m for m in mlp.modules() if m is not mlp and hasattr(m, "weight"))
    with mlp_only_where(mlp, need):
        handle = first_linear.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape))
        try:
            part = mlp(x)
        finally:
            handle.remove()
    assert seen == [(1, int(need.sum()), tiny_gpt2.config.n_embd)]  # only the needed rows ran
    torch.testing.assert_close(part[need], full[need])
    assert not part[~need].any()
    assert "forward" not in vars(mlp)  # the class's forward is back
    torch.testing.assert_close(mlp(x), full)
