"""The tuning stage of App. A: every method's hyperparameters chosen per editing problem.

The paper tunes each method on the first 100 facts at one layer (GPT-J 6, GPT2-XL 18, 1-indexed)
over KL weights {0.0625, 0.9, 1} (ROME, MEMIT) and L∞ radii {1e-4, 5e-5, 2e-5, 1e-5} (FT),
"to have high rewrite scores while not trading off too aggressively against paraphrase and
neighborhood scores ... no higher than 99%". That rule is loose; :class:`SelectionRule` writes
one down (``editing.tuning.selection``):

1. a candidate *qualifies* when its mean rewrite score is at most ``max_rewrite`` and its mean
   neighborhood and paraphrase scores are each at most ``max_neighborhood_drop`` /
   ``max_paraphrase_drop`` below the best among the candidates;
2. the qualifying candidate with the highest mean rewrite score is chosen (ties: grid order);
3. if none qualifies, the candidate with the highest mean overall score is chosen, and the
   table says so (``chosen_by: fallback``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

SCORES = ["rewrite_score", "paraphrase_score", "neighborhood_score", "overall_score", "essence_score"]


@dataclass(frozen=True)
class SelectionRule:
    """How a candidate is chosen (module docstring); None disables a bound."""

    max_rewrite: float | None = 0.99
    max_neighborhood_drop: float | None = 0.1
    max_paraphrase_drop: float | None = None


def candidates(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values, in grid order (first key slowest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def select(scores: pd.DataFrame, rule: SelectionRule) -> tuple[int, str]:
    """``(row position of the chosen candidate, "rule" | "fallback")`` from per-candidate mean
    scores (:data:`SCORES` columns, rows in grid order)."""
    if scores.empty:
        raise ValueError("no tuning candidates to choose from")
    ok = pd.Series(True, index=scores.index)
    if rule.max_rewrite is not None:
        ok &= scores["rewrite_score"] <= rule.max_rewrite
    for col, drop in (("neighborhood_score", rule.max_neighborhood_drop),
                      ("paraphrase_score", rule.max_paraphrase_drop)):  # fmt: skip
        if drop is not None:
            ok &= scores[col] >= scores[col].max() - drop
    ok &= scores["rewrite_score"].notna()
    if ok.any():
        best = scores.loc[ok, "rewrite_score"]
        return scores.index.get_loc(best.idxmax()), "rule"  # idxmax: first of ties
    return scores.index.get_loc(scores["overall_score"].fillna(-1.0).idxmax()), "fallback"


def candidate_table(variant: str, method: str, layer: int, grid: Mapping[str, Sequence],
                    results: Sequence[pd.DataFrame], rule: SelectionRule) -> pd.DataFrame:
    """One row per candidate: its values (JSON), mean scores, edits, and whether it was chosen.

    Args:
        results: the edit table of each candidate of :func:`candidates` (same order).
    """
    cands = candidates(grid)
    if len(cands) != len(results):
        raise ValueError(f"{len(results)} result tables for {len(cands)} candidates")
    rows = []
    for i, (values, edits) in enumerate(zip(cands, results)):
        row = {"variant": variant, "method": method, "layer": int(layer), "candidate": i,
               "values": json.dumps(values, sort_keys=True), "n_edits": len(edits)}  # fmt: skip
        row.update({col: float(edits[col].mean()) if len(edits) else float("nan") for col in SCORES})
        rows.append(row)
    table = pd.DataFrame(rows)
    chosen, how = select(table[SCORES], rule)
    table["chosen"] = [i == chosen for i in range(len(table))]
    table["chosen_by"] = [how if i == chosen else "" for i in range(len(table))]
    return table


def chosen_values(table: pd.DataFrame) -> dict:
    """The chosen candidate's hyperparameter values."""
    return json.loads(table.loc[table["chosen"], "values"].iloc[0])
