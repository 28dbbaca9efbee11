"""float16 (the GPT-J preset's dtype) through tracing, ROME, MEMIT and the covariance pass, on CPU.

Each test runs the same computation on a float32 model and on its float16 copy and bounds the
difference by a multiple of float16's machine epsilon (``EPS16`` = 2^-10): the multiple counts
the float16 roundings the result goes through, stated per test. Each test also requires the
difference to exceed float32 rounding, so a path that silently ran in float32 fails.

The ``gpu`` cases run the float16 copy on CUDA (as the GPT-J preset does) against float32 on the
CPU; they are selected by ``-m gpu`` on a machine with a GPU (this project's CI has none).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from locedit.adapters import edit_weight, n_layers
from locedit.editing.covariance import accumulate_second_moments
from locedit.editing.memit import apply_memit
from locedit.editing.rome import apply_rome
from locedit.editing.types import restore
from locedit.tracing.trace import FactTracer
from tests.conftest import _corpus
from tests.unit.test_rome import HP, TEMPLATES, _model, _request, _stats

EPS16 = torch.finfo(torch.float16).eps
EPS32 = torch.finfo(torch.float32).eps
CASES = [
    pytest.param((arch, device), id=f"{arch}-{device}",
                 marks=[pytest.mark.gpu] if device == "cuda" else [])
    for device in ("cpu", "cuda") for arch in ("gpt2", "llama")
]


@pytest.fixture(scope="module", params=CASES)
def pair(request, tiny_tokenizer):
    """``(float32 model on the CPU, its float16 copy on the case's device)``, 4 layers."""
    arch, device = request.param
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("float16 on CUDA: no CUDA device")
    m32 = _model(tiny_tokenizer, arch)
    m16 = copy.deepcopy(m32).half().to(device)
    assert all(p.dtype == torch.float16 for p in m16.parameters())
    return m32, m16


def _within(diff: float, tol: float, what: str) -> None:
    assert diff <= tol, f"{what}: float16 differs from float32 by {diff:.3g} > {tol:.3g}"
    assert diff > 10 * EPS32, f"{what}: float16 equals float32 ({diff:.3g}): did it run in float16?"


def test_tracing_in_float16(pair, tiny_tokenizer):
    m32, m16 = pair
    grids = []
    for model in (m32, m16):
        tracer = FactTracer(model, tiny_tokenizer, "The mother tongue of {} is", "Danielle Darrieux",
                            "French", noise_std=0.5, samples=4, seed=3, row_budget=64)
        res = tracer.restore("mlp", 3)
        grids.append(np.log(np.concatenate([[res.p_clean, res.p_noised], np.ravel(res.restored)])))
    # Log-probabilities: each block adds two sublayer outputs rounded to float16 (relative error
    # up to EPS16 each, with the matmul accumulation), so the logits drift by ~2 EPS16 per layer.
    tol = 2 * n_layers(m32) * EPS16
    _within(float(np.max(np.abs(grids[1] - grids[0]))), tol, "tracing log-probabilities")


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_edit_updates_in_float16(pair, tiny_tokenizer, counterfact_records, method):
    m32, m16 = pair
    stats = _stats(m32)  # the same float32 statistics for both (as a run of either dtype reads)
    apply, hp = {"rome": (apply_rome, HP),
                 "memit": (apply_memit, {**HP, "mom2_update_weight": 1.0, "window": 3})}[method]
    updates = []
    for model in (m32, m16):
        before = [edit_weight(model, layer).detach().clone() for layer in range(n_layers(model))]
        snap, _ = apply(model, tiny_tokenizer, _request(counterfact_records), 1, hp, stats, TEMPLATES)
        assert edit_weight(model, 1).dtype == before[1].dtype
        updates.append([(edit_weight(model, layer) - w).double().cpu() for layer, w in enumerate(before)])
        restore(model, snap)
        assert all(torch.equal(edit_weight(model, layer), w) for layer, w in enumerate(before))
    edited = [layer for layer, d in enumerate(updates[0]) if d.norm() > 0]
    assert edited == ([1] if method == "rome" else [0, 1, 2])
    # v* (z) is optimised by 15 Adam steps through the float16 model (logits ~2 EPS16 per layer,
    # gradients alike) and the update is written as W16 + ΔW rounded to float16: relative
    # error of ΔW within 8 EPS16.
    for layer in edited:
        a, b = updates[0][layer], updates[1][layer]
        _within(float((b - a).norm() / a.norm()), 8 * EPS16, f"{method} update of layer {layer}")


def test_covariance_pass_in_float16(pair, tiny_tokenizer):
    m32, m16 = pair
    docs = _corpus()[:20]
    states = [accumulate_second_moments(m, tiny_tokenizer, docs, [0, 2], max_length=16, batch_size=6)
              for m in (m32, m16)]
    for layer in (0, 2):
        # Sums accumulate in float32 whatever the model's dtype (a float16 sum over a corpus
        # would overflow and round away small keys).
        assert states[1].sums[layer].dtype == torch.float32
        a, b = (s.sums[layer].double().cpu() / s.count for s in states)
        # Keys are float16 activations: relative error ~EPS16 each after a few float16 layers;
        # their second moments within 2 EPS16.
        _within(float((b - a).norm() / a.norm()), 2 * EPS16, f"C of layer {layer}")
