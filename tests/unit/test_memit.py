"""MEMIT: edits exactly the clipped window's layers, solves λC + kkᵀ correctly, undoes bit-exactly."""

from __future__ import annotations

import pytest
import torch

from locedit.adapters import edit_weight, n_layers
from locedit.editing.covariance import CovarianceStore
from locedit.editing.memit import apply_memit
from locedit.layer_windows import edit_window as layer_window
from locedit.editing.types import restore
from tests.unit.test_rome import _model, _request, _stats

TEMPLATES = ["{}", "The team won the game. {}", "Is it true that. {}"]
# Small λ: the random model's keys are far smaller than GPT-J's (see memit.mom2_update_weight).
HP = {"v_weight_decay": 0.0, "clamp_norm_factor": 100.0, "v_num_grad_steps": 10,
      "early_stop_loss": None, "mom2_update_weight": 1.0}  # fmt: skip


@pytest.mark.parametrize(
    "center,window,total,expect",
    [
        (5, 5, 28, [3, 4, 5, 6, 7]),
        (0, 5, 28, [0, 1, 2]),
        (27, 5, 28, [25, 26, 27]),
        (1, 5, 28, [0, 1, 2, 3]),
        (5, 4, 28, [3, 4, 5, 6]),  # even windows: [l - w//2, l + ceil(w/2))
        (5, 10, 28, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ],
)
def test_layer_window(center, window, total, expect):
    assert layer_window(center, window, total) == expect


def test_layer_window_rejects_bad_layer():
    with pytest.raises(ValueError, match="edit layer 28"):
        layer_window(28, 5, 28)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_changes_only_window_layers_and_restores(tiny_tokenizer, counterfact_records, arch):
    model = _model(tiny_tokenizer, arch, n_layer=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snap, diag = apply_memit(model, tiny_tokenizer, _request(counterfact_records), 2, {**HP, "window": 3}, _stats(model), TEMPLATES)
    assert diag["edited_layers"] == "1,2,3" and diag["z_layer"] == 3
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expect = set()
    for layer in range(n_layers(model)):
        name = next(n for n, p in model.named_parameters() if p is edit_weight(model, layer))
        if layer in (1, 2, 3):
            expect.add(name)
    assert changed == expect
    assert set(snap.weights) == expect
    restore(model, snap)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_moves_residual_towards_z(tiny_tokenizer, counterfact_records):
    """With a weak λ the window's updates bring h_L at the bare prompt close to z."""
    from locedit.editing.compute_kv import module_io_at_lookup, optimize_value
    from locedit.editing.hparams import MEMITHparams, resolve

    model = _model(tiny_tokenizer, n_layer=6)
    req = _request(counterfact_records)
    hp = {**HP, "window": 3, "mom2_update_weight": 1e-3}
    z = optimize_value(model, tiny_tokenizer, req, TEMPLATES, 3, component="block",
                       hp=resolve(MEMITHparams, hp, "memit")).target  # fmt: skip
    _, h0 = module_io_at_lookup(model, tiny_tokenizer, req, [req.prompt], 3, component="block")
    snap, _ = apply_memit(model, tiny_tokenizer, req, 2, hp, _stats(model), TEMPLATES)
    _, h1 = module_io_at_lookup(model, tiny_tokenizer, req, [req.prompt], 3, component="block")
    assert (z - h0[0]).norm() > 0
    assert (z - h1[0]).norm() < 0.2 * (z - h0[0]).norm()
    restore(model, snap)


def test_deterministic(tiny_tokenizer, counterfact_records):
    model = _model(tiny_tokenizer, n_layer=6)
    stats = _stats(model)
    req = _request(counterfact_records, 3)
    snap, _ = apply_memit(model, tiny_tokenizer, req, 4, HP, stats, TEMPLATES)
    w = [edit_weight(model, l).detach().clone() for l in range(6)]
    restore(model, snap)
    apply_memit(model, tiny_tokenizer, req, 4, HP, stats, TEMPLATES)
    assert all(torch.equal(w[l], edit_weight(model, l)) for l in range(6))


def test_memit_solve_matches_direct_solve():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 100, generator=g, dtype=torch.float64)
    c = a @ a.T / 100
    store = CovarianceStore.from_matrices({0: c})
    for n in (1, 3):
        k = torch.randn(40, n, generator=g, dtype=torch.float64)
        direct = torch.linalg.solve(7.0 * c + k @ k.T, k)
        assert torch.allclose(store.memit_solve(0, 7.0, k).double(), direct, rtol=1e-5, atol=1e-7)
