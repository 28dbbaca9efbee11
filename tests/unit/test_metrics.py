"""Edit metrics: the paper's normalised scores, the erasure form, essence cap, ROME's unscaled."""

from __future__ import annotations

import math

import pytest

from locedit.editing import metrics as M


def test_recovered_fraction_is_share_of_possible_gain():
    assert M.recovered_fraction(0.2, 0.6) == pytest.approx(0.5)
    assert M.recovered_fraction(0.2, 1.0) == pytest.approx(1.0)
    assert M.recovered_fraction(0.2, 0.1) == M.RECOVERED_FLOOR  # a drop is floored, not negative


def test_erased_fraction_for_erasure():
    assert M.erased_fraction(0.5, 0.1) == pytest.approx(0.8)
    assert M.erased_fraction(0.5, 0.7) == 0.0
    assert M.target_score(0.5, 0.1, minimize=True) == pytest.approx(0.8)
    assert M.target_score(0.5, 0.1, minimize=False) == M.RECOVERED_FLOOR


def test_neighborhood_score_scales_by_largest_possible_change():
    assert M.neighborhood_score(0.3, 0.3) == 1.0
    assert M.neighborhood_score(0.3, 1.0) == pytest.approx(0.0)  # max possible rise is .7
    assert M.neighborhood_score(0.8, 0.0) == pytest.approx(0.0)  # max possible drop is .8
    assert M.neighborhood_score(0.8, 0.4) == pytest.approx(0.5)


def test_essence_score_caps_increase_and_ignores_decrease():
    assert M.essence_score(10.0, 12.5) == pytest.approx(0.5)
    assert M.essence_score(10.0, 9.0) == 1.0
    assert M.essence_score(10.0, 30.0) == 0.0
    assert M.essence_score(10.0, 11.0, cap=2.0) == pytest.approx(0.5)


def test_aggregate_mean_of_scores_or_first_prompt():
    pre, post = [0.2, 0.5], [0.6, 0.5]
    score, p0, p1 = M.aggregate(pre, post, lambda a, b: M.recovered_fraction(a, b), "mean")
    assert score == pytest.approx((0.5 + M.RECOVERED_FLOOR) / 2)
    assert (p0, p1) == (pytest.approx(0.35), pytest.approx(0.55))
    first, _, _ = M.aggregate(pre, post, lambda a, b: M.recovered_fraction(a, b), "first")
    assert first == pytest.approx(0.5)
    assert all(math.isnan(v) for v in M.aggregate([], [], M.neighborhood_score))
    with pytest.raises(ValueError, match="paraphrase_aggregation"):
        M.aggregate(pre, post, M.neighborhood_score, "median")


def test_unscaled_success_and_magnitude():
    assert M.unscaled([0.6, 0.1], [0.2, 0.3]) == (pytest.approx(0.5), pytest.approx(0.1))
    assert M.unscaled([0.6, 0.1], [0.2, 0.3], target_wins=False) == (
        pytest.approx(0.5),
        pytest.approx(-0.1),
    )


def _probs(rw, par, nbr):
    return {"rewrite": rw, "paraphrase": par, "neighborhood": nbr}


def test_edit_scores_assembles_one_row():
    case = {"minimize": False, "target": "English", "true_object": "French"}
    pre = _probs(
        {"target": [0.2], "contrast": [0.7]},
        {"target": [0.2, 0.4], "contrast": [0.6, 0.5]},
        {"target": [0.1], "contrast": [0.8], "nbr": [0.1]},
    )
    post = _probs(
        {"target": [0.6], "contrast": [0.3]},
        {"target": [0.2, 0.7], "contrast": [0.6, 0.2]},
        {"target": [0.2], "contrast": [0.7], "nbr": [0.2]},
    )
    row = M.edit_scores(case, pre, post, 10.0, 11.0)
    assert row["rewrite_score"] == pytest.approx(0.5)
    assert row["paraphrase_score"] == pytest.approx((M.RECOVERED_FLOOR + 0.5) / 2)
    assert row["neighborhood_score"] == pytest.approx(1 - 0.1 / 0.9)
    expected = (row["rewrite_score"] + row["paraphrase_score"] + row["neighborhood_score"]) / 3
    assert row["overall_score"] == pytest.approx(expected)
    assert row["essence_score"] == pytest.approx(0.8)
    assert row["efficacy_success"] == 1.0 and row["efficacy_magnitude"] == pytest.approx(0.3)
    assert row["paraphrase_success"] == 0.5
    # Neighbours should keep preferring the true object (the contrast here) over y.
    assert row["neighborhood_success"] == 1.0
    assert row["neighborhood_magnitude"] == pytest.approx(0.5)
    assert row["rewrite_pre"] == 0.2 and row["rewrite_post"] == 0.6


def test_edit_scores_erasure_uses_erased_fraction():
    case = {"minimize": True, "target": "French", "true_object": "French"}
    pre = _probs({"target": [0.5], "contrast": [0.1]}, {}, {"target": [0.5], "contrast": [0.1], "nbr": [0.5]})
    post = _probs({"target": [0.1], "contrast": [0.2]}, {}, {"target": [0.5], "contrast": [0.1], "nbr": [0.5]})
    row = M.edit_scores(case, pre, post, 5.0, 5.0)
    assert row["rewrite_score"] == pytest.approx(0.8)
    assert math.isnan(row["paraphrase_score"])  # no paraphrase prompts
    assert row["overall_score"] == pytest.approx((0.8 + 1.0) / 2)
    assert row["efficacy_success"] == 1.0  # o_true no longer beats o_false
    assert row["neighborhood_success"] == 1.0  # y is o_true: neighbours still prefer it
