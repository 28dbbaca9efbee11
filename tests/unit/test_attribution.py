"""Attribution patching: the first-order estimate of a restoration (exact as the restored
difference shrinks), windows as sums of layers, and its place in the tracing tables."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from locedit.adapters import module_for, untuple
from locedit.hooks import forward_hooks
from locedit.noise import subject_noise_hook
from locedit.tracing.attribution import attribution_grid, attribution_terms
from locedit.tracing.trace import FactTracer


@pytest.fixture
def tracer(tiny_gpt2, tiny_tokenizer, counterfact_records):
    model = copy.deepcopy(tiny_gpt2).double()  # float64: the ε → 0 limit is not float32 noise
    rw = counterfact_records[0]["requested_rewrite"]
    return FactTracer(model, tiny_tokenizer, rw["prompt"], rw["subject"], rw["target_true"]["str"],
                      noise_std=0.5, samples=4, seed=3)  # fmt: skip


def _partially_restored(tracer, layer: int, token: int, eps: float, component: str = "mlp") -> float:
    """Exact: mean target probability of the noised runs with the ``component`` output at
    (token, layer) moved a fraction ``eps`` of the way to its clean value."""
    model, samples = tracer.model, tracer.samples
    mlp = module_for(model, component, layer)
    clean = {}

    def keep(module, inputs, output):
        clean["a"] = untuple(output)[0, token].detach().clone()

    ids = tracer.input_ids
    with torch.no_grad(), forward_hooks([(mlp, keep)]):
        model(input_ids=ids, use_cache=False)

    def move(module, inputs, output):
        hidden = untuple(output).clone()
        hidden[:, token] += eps * (clean["a"] - hidden[:, token])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    hooks = [(module_for(model, "embed"), subject_noise_hook(tracer.subject_range, tracer.noise)),
             (mlp, move)]  # fmt: skip
    with torch.no_grad(), forward_hooks(hooks):
        logits = model(input_ids=ids.expand(samples, -1), use_cache=False).logits
    read = logits[:, tracer.read_positions].double().log_softmax(-1)
    tgt = torch.tensor(tracer.target_ids).view(1, -1, 1).expand(samples, -1, 1)
    return float(read.gather(-1, tgt).sum((1, 2)).exp().mean())


@pytest.mark.parametrize("component", ["mlp", "attn", "block"])
def test_atp_is_the_exact_effect_to_first_order(tracer, component):
    """Scaling the clean − noised difference by ε → 0, exact effect / (ε · AtP term) → 1, for
    the MLP, attention and block (hidden state) outputs."""
    terms = attribution_terms(tracer.model, tracer.input_ids, tracer.subject_range, tracer.noise,
                              tracer.target_ids, component=component)  # fmt: skip
    mean = terms.mean(0)[tracer.subject_range[0]:len(tracer.prompt_ids)]
    # the three cells AtP ranks highest (a random model's effects are tiny elsewhere)
    top = torch.topk(mean.abs().flatten(), 3).indices.tolist()
    for flat in top:
        token, layer = tracer.subject_range[0] + flat // tracer.n_layers, flat % tracer.n_layers
        estimate = float(terms[:, token, layer].mean())
        base = _partially_restored(tracer, layer, token, 0.0, component)
        errors = []
        for eps in (1e-1, 1e-2, 1e-3):
            exact = _partially_restored(tracer, layer, token, eps, component) - base
            errors.append(abs(exact / (eps * estimate) - 1))
        # first-order convergence: the error shrinks with ε (about tenfold per step here)
        assert errors[2] < 1e-3 and errors[2] < errors[1] < errors[0], (token, layer, errors)


def test_atp_grid_sums_layers_over_the_window_and_is_exact_before_the_subject(tracer):
    result = tracer.attribute(window=3)
    terms = tracer._atp_terms["mlp"].mean(0).numpy()
    s0, L = tracer.subject_range[0], tracer.n_layers
    assert result.kind == "atp" and result.restored.shape == (len(tracer.prompt_ids), L)
    assert np.all(result.restored[:s0] == tracer.p_noised)  # Δ = 0 before the subject
    t = s0
    assert result.restored[t, 0] == pytest.approx(tracer.p_noised + terms[t, 0:2].sum(), rel=1e-12)
    assert result.restored[t, 2] == pytest.approx(tracer.p_noised + terms[t, 1:4].sum(), rel=1e-12)
    one = attribution_grid(tracer._atp_terms["mlp"], 1, len(tracer.prompt_ids), s0, tracer.p_noised)
    assert one[t] == pytest.approx(tracer.p_noised + terms[t], rel=1e-12)
    with pytest.raises(ValueError, match="not an attribution"):
        tracer.attribute(window=3, kind="mlp")
    for kind, component in (("atp_attn", "attn"), ("atp_hidden", "block")):  # one pass each
        assert tracer.attribute(window=3, kind=kind).kind == kind
        assert set(tracer._atp_terms) >= {"mlp", component.replace("block", "hidden")}


def test_atp_agrees_with_exact_restoration_at_full_scale(tracer):
    """At ε = 1 the estimate is approximate; on this random model its cells still rank like the
    exact ones (the toy's agreement is measured by the workflow, tracing/atp_agreement)."""
    from scipy.stats import spearmanr

    exact = tracer.restore("mlp", 1).restored[tracer.subject_range[0]:]
    approx = tracer.attribute(1).restored[tracer.subject_range[0]:]
    rho = spearmanr(exact.ravel(), approx.ravel()).statistic
    assert rho > 0.5, rho


def test_atp_runs_through_the_tracing_tables_and_the_agreement(tiny_gpt2, tiny_tokenizer, counterfact_records):
    """``kind: atp`` is traced by trace_dataset like any run, its effects land in the effects
    table, and the agreement with its exact run is measured per fact."""
    from locedit.registry.kinds import estimate_pairs
    from locedit.tracing.agreement import agreement, agreement_summary
    from locedit.tracing.tables import layer_effects, trace_dataset

    facts = [{"case_id": int(r["case_id"]), "prompt": r["requested_rewrite"]["prompt"],
              "subject": r["requested_rewrite"]["subject"],
              "target_true": r["requested_rewrite"]["target_true"]["str"]}
             for r in counterfact_records[:3]]  # fmt: skip
    runs = [{"kind": "mlp", "window": 1}, {"kind": "atp", "window": 1}, {"kind": "atp", "window": 3}]
    assert estimate_pairs(runs) == [("atp", "mlp", 1)]  # atp w3 has no exact run to compare with
    grid, table = trace_dataset(tiny_gpt2, tiny_tokenizer, facts, runs, noise_std=0.5, samples=3,
                                seed=0, row_budget=64, o_noise_max_tokens=3)  # fmt: skip
    assert set(zip(grid["kind"], grid["window"])) == {("mlp", 1), ("atp", 1), ("atp", 3)}
    effects = layer_effects(grid, table, runs, min_total_effect=0.0)  # a random model: tiny p
    assert effects.loc[effects["kind"] == "atp", "effect_frac_max"].notna().all()
    agree = agreement(grid, effects, table, runs)
    assert len(agree) == 3 and (agree["window"] == 1).all()
    assert agree["rho_cells"].between(-1, 1).all() and (agree["n_cells"] > 0).all()
    # an estimate equal to the exact grid agrees perfectly
    same = grid[grid["kind"] == "mlp"].assign(kind="atp")
    perfect = pd.concat([grid[grid["kind"] == "mlp"], same], ignore_index=True)
    eff = layer_effects(perfect, table, runs[:2], min_total_effect=0.0)
    full = agreement(perfect, eff, table, runs[:2])
    assert np.allclose(full["rho_cells"], 1.0) and (full["peak_exact"] == full["peak_estimate"]).all()
    summary = agreement_summary(full)
    assert summary["same peak layer"].tolist() == ["100.0%"] and summary["Facts"].tolist() == [3]
