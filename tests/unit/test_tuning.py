"""The tuning stage's choice: the written-down App. A rule on constructed score tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from locedit.editing.tuning import SCORES, SelectionRule, candidate_table, candidates, chosen_values, select


def _scores(rows):
    return pd.DataFrame([dict(zip(["rewrite_score", "paraphrase_score", "neighborhood_score"], r),
                              overall_score=sum(r) / 3, essence_score=1.0) for r in rows])  # fmt: skip


def test_candidates_are_the_grid_product_in_grid_order():
    assert candidates({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_select_takes_the_highest_rewrite_under_the_cap_without_losing_the_neighbours():
    rule = SelectionRule(max_rewrite=0.99, max_neighborhood_drop=0.1)
    table = _scores([
        (0.60, 0.50, 0.95),  # qualifies
        (0.995, 0.90, 0.90),  # rewrite above the cap
        (0.90, 0.70, 0.80),  # neighborhood 0.15 below the best (0.95): traded away
        (0.85, 0.60, 0.88),  # qualifies, highest rewrite among those that do: the known best
    ])  # fmt: skip
    assert select(table, rule) == (3, "rule")
    # a looser neighbourhood bound admits candidate 2
    assert select(table, SelectionRule(max_rewrite=0.99, max_neighborhood_drop=0.2)) == (2, "rule")
    # no cap: the 99.5% candidate wins
    assert select(table, SelectionRule(max_rewrite=None, max_neighborhood_drop=None)) == (1, "rule")
    # a paraphrase bound excludes 3 (0.30 below 0.90)
    assert select(table, SelectionRule(max_paraphrase_drop=0.25, max_neighborhood_drop=None)) == (2, "rule")


def test_select_ties_go_to_grid_order_and_nothing_qualifying_falls_back_to_overall():
    tie = _scores([(0.7, 0.5, 0.9), (0.7, 0.5, 0.9)])
    assert select(tie, SelectionRule()) == (0, "rule")
    over = _scores([(0.999, 0.2, 0.5), (0.995, 0.9, 0.9)])  # both above the cap
    assert select(over, SelectionRule()) == (1, "fallback")
    with pytest.raises(ValueError, match="no tuning candidates"):
        select(_scores([]).reindex(columns=SCORES), SelectionRule())


def test_candidate_table_records_every_candidate_and_the_choice():
    grid = {"norm_constraint": [1e-4, 5e-5]}
    edits = [pd.DataFrame({c: [v, v] for c in SCORES}) for v in (0.5, 0.8)]
    table = candidate_table("error_injection", "ft-1", 5, grid, edits, SelectionRule())
    assert table["chosen"].tolist() == [False, True] and table["n_edits"].tolist() == [2, 2]
    assert json.loads(table["values"].iloc[1]) == {"norm_constraint": 5e-5}
    assert chosen_values(table) == {"norm_constraint": 5e-5}
    with pytest.raises(ValueError, match="candidates"):
        candidate_table("error_injection", "ft-1", 5, grid, edits[:1], SelectionRule())
