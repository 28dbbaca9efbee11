"""The batched editing engine computes what the per-fact path computes, on every architecture.

The per-fact path (``compute_kv.optimize_value``, ``ft.apply_ft``) runs the whole model over
every prompt at every step; the engine replays only the layers and positions an edit can change,
for several facts per pass. Both are run here on the same requests: the optimised values, step
counts and finetuned weights must agree to float rounding. Requests mix error injection,
erasure and fact forcing, and the small row budgets force facts to leave and join the batch.

The engine also swaps GPT-2's five-kernel GELU for PyTorch's fused one (same formula, other
rounding; ``tests/unit/test_kernels.py``). On these random models Adam turns noise-level gradient
components into full steps, so any change of rounding moves the optimum by ~1% whatever the
implementation; the replay is therefore compared here with the model's own GELU (``unfused_engines``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import transformers as T

from locedit.adapters import ADAPTERS, edit_weight, n_layers
from locedit.editing.hparams import ROMEHparams
from locedit.editing.compute_kv import optimize_value
from locedit.editing.engine import optimize_values
from locedit.editing.ft import apply_ft, edit_ft_batch
from locedit.editing.types import EditRequest, restore
from locedit.noise import subject_noise
from tests.models.test_adapters import _configs

pytestmark = pytest.mark.usefixtures("unfused_engines")

TEMPLATES = ["{}", "The team won the game. {}", "It was. {}", "After the war, many families moved. {}"]
VALUE_HP = ROMEHparams(
    v_num_grad_steps=8, v_lr=0.5, v_weight_decay=0.5, kl_factor=0.0625,
    clamp_norm_factor=4.0, early_stop_loss=None, fact_token="subject_last",
)  # fmt: skip


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    out = {}
    for arch, cfg in _configs(len(tiny_tokenizer)).items():
        torch.manual_seed(0)
        out[arch] = T.AutoModelForCausalLM.from_config(cfg).eval().requires_grad_(False)
    return out


def _requests(records, d_model: int, kinds=("inject", "erase", "force")) -> list[EditRequest]:
    out = []
    for i, rec in enumerate(records):
        rw = rec["requested_rewrite"]
        kind = kinds[i % len(kinds)]
        out.append(
            EditRequest(
                case_id=int(rec["case_id"]),
                prompt=rw["prompt"],
                subject=rw["subject"],
                target=rw["target_new"]["str"] if kind != "erase" else rw["target_true"]["str"],
                minimize=kind == "erase",
                noise=subject_noise(d_model, 8, 0.5, i) if kind == "force" else None,
            )
        )
    return out


def _d_model(model) -> int:
    return model.get_input_embeddings().weight.shape[1]


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
@pytest.mark.parametrize("component", ["mlp_out", "block"])
def test_values_match_per_fact_path(models, tiny_tokenizer, counterfact_records, arch, component):
    model = models[arch]
    reqs = _requests(counterfact_records, _d_model(model))
    layer = 1
    ref = [optimize_value(model, tiny_tokenizer, r, TEMPLATES, layer, component=component, hp=VALUE_HP) for r in reqs]
    # 2 facts per pass (5 rows each): facts leave and join while others are mid-optimisation
    new = optimize_values(
        model, tiny_tokenizer, reqs, TEMPLATES, layer, component=component, hp=VALUE_HP, row_budget=10
    )
    for r, a, b in zip(reqs, ref, new):
        assert b.diagnostics["n_forward"] == a.diagnostics["n_forward"]
        torch.testing.assert_close(b.init, a.init, rtol=1e-5, atol=1e-6)
        assert_same_value(r, a, b)


def assert_same_value(request: EditRequest, a, b) -> None:
    """Values of the two paths agree to float rounding.

    Erasure minimises p(target) ≈ 1e-3: Adam normalises its tiny gradients, so float32 rounding
    (any: the fused GELU alone moves v* by 1e-4 here) steers the steps, and *both* paths sit
    ~1e-5..1e-4 from a float64 run; its values are compared at that scale, its losses tightly.
    """
    tol = dict(rtol=1e-3, atol=1e-3) if request.minimize else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.target, a.target, **tol)
    for key in ("loss", "p_target", "p_target_prompt", "p_target_init"):
        rel = 1e-3 if request.minimize and key == "loss" else 1e-4  # the loss holds ‖delta‖
        assert b.diagnostics[key] == pytest.approx(a.diagnostics[key], rel=rel, abs=1e-7), key


def test_early_stopping_per_fact(models, tiny_tokenizer, counterfact_records):
    """Facts stop at their own step, as they do one at a time.

    """
    model = models["GPT2LMHeadModel"]
    reqs = _requests(counterfact_records, _d_model(model), kinds=("inject",))
    hp = replace(VALUE_HP, v_num_grad_steps=30, v_weight_decay=0.0, clamp_norm_factor=100.0)
    free = [optimize_value(model, tiny_tokenizer, r, TEMPLATES, 2, component="mlp_out", hp=hp) for r in reqs]
    # a threshold that some facts cross before the last step and others never do
    hp = replace(hp, early_stop_loss=sorted(v.diagnostics["loss"] for v in free)[len(free) // 2] + 1e-3)
    ref = [optimize_value(model, tiny_tokenizer, r, TEMPLATES, 2, component="mlp_out", hp=hp) for r in reqs]
    new = optimize_values(model, tiny_tokenizer, reqs, TEMPLATES, 2, component="mlp_out", hp=hp)
    steps = [a.diagnostics["n_forward"] for a in ref]
    assert len(set(steps)) > 1 and min(steps) < 30  # the test exercises per-fact stopping
    assert [b.diagnostics["n_forward"] for b in new] == steps
    for r, a, b in zip(reqs, ref, new):
        assert_same_value(r, a, b)


def test_rome_keys_come_from_the_prefix_pass(models, tiny_tokenizer, counterfact_records):
    from locedit.editing.compute_kv import fill_template, module_io_at_lookup

    model = models["GPT2LMHeadModel"]
    req = _requests(counterfact_records, _d_model(model))[2]  # fact forcing: keys under noise
    got = optimize_values(model, tiny_tokenizer, [req], TEMPLATES, 1, component="mlp_out", hp=VALUE_HP)[0]
    prompts = [fill_template(c, req.prompt) for c in TEMPLATES]
    keys, outs = module_io_at_lookup(model, tiny_tokenizer, req, prompts, 1)
    torch.testing.assert_close(got.lookup_in, keys, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.lookup_out, outs, rtol=1e-5, atol=1e-6)


def _ft_weights(model, fn, reqs, layer, hp):
    out = []
    for snap, info in fn(reqs):
        out.append(({l: edit_weight(model, l).detach().clone() for l in info["layers"]}, info))
        restore(model, snap)
    return out


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
@pytest.mark.parametrize("window", [1, 3])
def test_ft_matches_per_fact_path(models, tiny_tokenizer, counterfact_records, arch, window):
    model = models[arch]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reqs = _requests(counterfact_records, _d_model(model))
    layer = n_layers(model) - 1
    hp = {"lr": 5e-2, "num_steps": 6, "norm_constraint": 2e-2, "stop_loss": 0.0, "window": window,
          "num_noise_samples": 3}  # fmt: skip
    ref = _ft_weights(model, lambda rs: (apply_ft(model, tiny_tokenizer, r, layer, hp) for r in rs), reqs, layer, hp)
    # facts of one batch share their number of noised copies: run forcing and the rest apart
    forcing = [r for r in reqs if r.noise is not None]
    rest = [r for r in reqs if r.noise is None]
    new = {}
    for group in (forcing, rest):
        res = _ft_weights(model, lambda rs: edit_ft_batch(model, tiny_tokenizer, rs, layer, hp, max_facts=2), group, layer, hp)
        new.update({r.case_id: x for r, x in zip(group, res)})
    for r, (w_ref, info_ref) in zip(reqs, ref):
        w_new, info_new = new[r.case_id]
        assert info_new["steps"] == info_ref["steps"]
        assert info_new["final_loss"] == pytest.approx(info_ref["final_loss"], rel=1e-4, abs=1e-7)
        for l in w_ref:
            torch.testing.assert_close(w_new[l], w_ref[l], rtol=0, atol=1e-5)
    for k, v in model.state_dict().items():  # every edit was undone bit-exactly
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
def test_fused_lookup_reads_equal_separate_passes(models, tiny_tokenizer, counterfact_records, arch):
    """MEMIT's engine path reads keys at l and h at the z layer from one pass stopped at the
    z layer; the per-fact path runs one full pass for each."""
    from locedit.editing.compute_kv import fill_template, lookup_reads, module_io_at_lookup

    model = models[arch]
    req = _requests(counterfact_records, _d_model(model))[2]  # under fact-forcing noise
    prompts = [fill_template(c, req.prompt) for c in TEMPLATES]
    got = lookup_reads(model, tiny_tokenizer, req, prompts, [("mlp_out", 0), ("block", 1)])
    keys, _ = module_io_at_lookup(model, tiny_tokenizer, req, prompts, 0)
    _, h = module_io_at_lookup(model, tiny_tokenizer, req, [req.prompt], 1, component="block")
    torch.testing.assert_close(got[("mlp_out", 0)][0], keys, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[("block", 1)][1][:1], h, rtol=1e-5, atol=1e-6)


def test_engine_defaults_are_the_schema_defaults():
    """The Python API's defaults and the workflow's (schema) defaults are the same numbers."""
    from pathlib import Path

    import yaml

    from locedit.editing import engine, ft

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "workflow/schemas/editing.schema.yaml").read_text()
    )["properties"]["engine"]["properties"]
    assert engine.DEFAULT_ROW_BUDGET == schema["row_budget"]["default"]
    assert engine.DEFAULT_MAX_FACTS == ft.DEFAULT_MAX_FACTS == schema["max_facts"]["default"]


def test_replaying_the_edit_layer_gives_the_same_values(models, tiny_tokenizer, counterfact_records, monkeypatch):
    """Where the delta would not reach block l's output unchanged (say, a normalised MLP
    output), the engine replays block l with the delta on its module; same values."""
    from locedit.editing import engine

    model = models["LlamaForCausalLM"]
    reqs = _requests(counterfact_records, _d_model(model))
    ref = [optimize_value(model, tiny_tokenizer, r, TEMPLATES, 1, component="mlp_out", hp=VALUE_HP) for r in reqs]
    monkeypatch.setattr(engine, "_delta_passes_through", lambda *a: False)
    new = optimize_values(model, tiny_tokenizer, reqs, TEMPLATES, 1, component="mlp_out", hp=VALUE_HP)
    for r, a, b in zip(reqs, ref, new):
        assert b.diagnostics["n_forward"] == a.diagnostics["n_forward"]
        assert_same_value(r, a, b)


def test_a_batch_whose_facts_disagree_on_the_shortcut_replays_the_edit_layer(
    models, tiny_tokenizer, counterfact_records, monkeypatch
):
    """Facts of one batch may disagree on whether the delta passes through block l (in half
    precision the check is decided per fact): the batch then replays block l for all of them,
    with the same values, instead of failing."""
    from locedit.editing import engine

    model = models["LlamaForCausalLM"]
    reqs = _requests(counterfact_records, _d_model(model))
    assert len(reqs) >= 2
    ref = [optimize_value(model, tiny_tokenizer, r, TEMPLATES, 1, component="mlp_out", hp=VALUE_HP) for r in reqs]
    calls = iter(range(10_000))
    monkeypatch.setattr(engine, "_delta_passes_through", lambda *a: next(calls) % 2 == 0)
    new = optimize_values(model, tiny_tokenizer, reqs, TEMPLATES, 1, component="mlp_out", hp=VALUE_HP)
    for r, a, b in zip(reqs, ref, new):
        assert_same_value(r, a, b)


def test_the_shortcut_holds_in_half_precision(models, tiny_tokenizer, counterfact_records):
    """The pass-through check tolerates the model's own rounding: in float16 and bfloat16 the
    engine skips block l for GPT-2 as it does in float32."""
    import copy

    from locedit.editing import engine

    for dtype in (torch.float16, torch.bfloat16):
        model = copy.deepcopy(models["GPT2LMHeadModel"]).to(dtype)
        req = _requests(counterfact_records, _d_model(model))[0]
        fact = engine._prefix_pass(model, tiny_tokenizer, 0, req, TEMPLATES, 1, "mlp_out", "subject_last")
        assert fact.first == 2, dtype
