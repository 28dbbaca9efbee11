"""The tracing engine, through the workflow's own entry point (``trace_dataset``: per-fact seeds
from the config seed), against a reference tracer that shares no code with ``src/locedit``
(tests/reference_tracer.py): subject location, windows, the documented noise-seed rule
(``seed·1000003 + case_id``) and the restoration grid must all agree."""

from __future__ import annotations

import numpy as np
import pytest

from locedit.tracing.tables import trace_dataset
from tests.reference_tracer import reference_trace

FACTS = [
    {"case_id": 7, "prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
     "target_true": "French"},
    {"case_id": 1004, "prompt": "{} plays the", "subject": "Toko Yasuda", "target_true": "guitar piano"},
]
RUNS = [{"kind": "mlp", "window": 3}, {"kind": "attn", "window": 1}, {"kind": "hidden", "window": 5}]


@pytest.mark.parametrize("config_seed", [0, 5])
def test_engine_agrees_with_an_independent_reference(tiny_gpt2, tiny_tokenizer, config_seed):
    grid, facts = trace_dataset(tiny_gpt2, tiny_tokenizer, FACTS, RUNS, noise_std=0.5, samples=3,
                                seed=config_seed, row_budget=16, o_noise_max_tokens=2)
    facts = facts.set_index("case_id")
    for fact in FACTS:
        cid = fact["case_id"]
        for run in RUNS:
            p_clean, p_noised, restored, (s0, s1) = reference_trace(
                tiny_gpt2, tiny_tokenizer, fact["prompt"], fact["subject"], fact["target_true"],
                kind=run["kind"], width=run["window"], noise_std=0.5, samples=3,
                config_seed=config_seed, case_id=cid)
            rows = grid[(grid.case_id == cid) & (grid.kind == run["kind"])
                        & (grid.window == run["window"])]
            ours = rows.pivot(index="token_index", columns="layer", values="p_restored").to_numpy()
            np.testing.assert_allclose(ours, restored, rtol=1e-5, atol=1e-12)
            assert facts.loc[cid, "p_clean"] == pytest.approx(p_clean, rel=1e-5)
            assert facts.loc[cid, "p_noised"] == pytest.approx(p_noised, rel=1e-5)
            assert (facts.loc[cid, "subject_start"], facts.loc[cid, "subject_end"]) == (s0, s1)
            assert rows.loc[rows.is_subject, "token_index"].unique().tolist() == list(range(s0, s1))


def test_another_seed_rule_would_be_caught(tiny_gpt2, tiny_tokenizer):
    """The comparison is sensitive to the noise draws: a fact traced with a neighbour's seed
    differs from the reference well beyond the tolerance."""
    fact = FACTS[0]
    _, _, restored, _ = reference_trace(
        tiny_gpt2, tiny_tokenizer, fact["prompt"], fact["subject"], fact["target_true"],
        kind="mlp", width=3, noise_std=3.0, samples=3, config_seed=0, case_id=fact["case_id"] + 1)
    grid, _ = trace_dataset(tiny_gpt2, tiny_tokenizer, [fact], RUNS[:1], noise_std=3.0, samples=3,
                            seed=0, row_budget=16, o_noise_max_tokens=2)
    ours = grid.pivot(index="token_index", columns="layer", values="p_restored").to_numpy()
    assert np.max(np.abs(ours - restored) / restored) > 100 * 1e-5
