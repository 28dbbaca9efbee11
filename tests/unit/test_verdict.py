"""The verdict paragraph follows the run's numbers (locedit.analysis.verdict)."""

from __future__ import annotations

import pandas as pd
import pytest

from locedit.analysis.verdict import verdict

CONDITIONS = [("error_injection", "rome"), ("error_injection", "memit"), ("fact_forcing", "ft-1"),
              ("fact_forcing", "ft-5"), ("tracing_reversal", "rome")]


def _reg(ci_low, cv=0.01, wild=0.5):
    rows = []
    for (variant, method), low in zip(CONDITIONS, ci_low):
        rows.append({"variant": variant, "method": method, "metric": "rewrite", "status": "ok",
                     "r2_layer": 0.4, "r2_diff": 0.02, "r2_diff_null_mean": 0.01, "cv_r2_diff": cv,
                     "cv_r2_diff_ci_low": low, "cv_r2_diff_ci_high": low + 0.1,
                     "wald_pvalue_wild": wild, "f_pvalue": 0.01})
    other = dict(rows[0], metric="paraphrase", cv_r2_diff_ci_low=0.5)  # not the rewrite score
    return pd.DataFrame(rows + [other])


def _edits(peaks):
    return pd.DataFrame({"case_id": range(len(peaks)), "peak_layer": peaks})


SPREAD = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 6


@pytest.mark.parametrize("ci_low, answer", [
    ([-0.1] * 5, "No."), ([0.01, -0.1, -0.1, -0.1, -0.1], "Barely."),
    ([0.01, 0.01, -0.1, -0.1, -0.1], "In part."), ([0.01] * 4 + [-0.1], "Mostly yes."),
])
def test_the_answer_follows_held_out_gains(ci_low, answer):
    text = verdict(_reg(ci_low), _edits(SPREAD), 0.05, "gpt-j", "MLP tracing (window 5)")
    assert text.startswith(f"Does localization inform editing on gpt-j? {answer} Across 5 conditions")
    k = sum(c > 0 for c in ci_low)
    assert f"lies above zero in {k} of 5 conditions" in text
    assert "R² 0.400" in text and "raises R² by 0.020" in text and "0.010 expected by chance" in text
    assert "the paper's F-test, which counts edits as independent, in 5" in text
    assert "Localization does vary between facts" in text and "intervals are wide" not in text


def test_broken_cross_validation_hands_the_answer_to_the_clustered_test():
    text = verdict(_reg([-300] * 5, cv=-250.0, wild=0.01), _edits(SPREAD), 0.05, "m", "t")
    assert "held-out gains are not meaningful (median -250" in text
    assert text.startswith("Does localization inform editing on m? Mostly yes.")
    assert "wild cluster bootstrap) finds a gain at p < 0.05 in 5 of 5" in text
    assert "A likely cause" not in text  # no tracing effects given: no cause named


def test_an_exploding_tracing_effect_is_named_as_the_likely_cause():
    """SmolLM2-135M: one fact whose noise barely moved its answer has effects up to 1,857."""
    edits = _edits(SPREAD).assign(trace_effect=[0.5 + (i % 7) for i in range(len(SPREAD))])
    edits.loc[edits["case_id"] == 3, "trace_effect"] = 1856.8
    text = verdict(_reg([-300] * 5, cv=-250.0), edits, 0.05, "m", "t")
    assert "A likely cause: the tracing effect of fact 3 reaches 1,857, where every other fact's stays below 6.5" in text
    calm = verdict(_reg([-300] * 5, cv=-250.0), edits.assign(trace_effect=1.0), 0.05, "m", "t")
    assert "A likely cause" not in calm


@pytest.mark.parametrize("peaks, caveat", [
    ([2] * 9 + [3], "Caveat: the tracing peak lies at layer 3 (1-indexed) for 90% of the 10 facts "
                    "(2 distinct peak layers): localization barely varies"),
    ([2] * 6 + [3] * 4, "localization varies little between facts"),
])
def test_caveats_on_how_little_localization_varies_and_few_facts(peaks, caveat):
    text = verdict(_reg([-0.1] * 5), _edits(peaks), 0.05, "toy", "t")
    assert caveat in text and "With 10 facts the intervals are wide" in text


def test_no_condition_fitted_says_so():
    reg = _reg([-0.1] * 5).assign(status="too_few")
    assert "This run cannot say" in verdict(reg, _edits(SPREAD), 0.05, "toy", "t")
