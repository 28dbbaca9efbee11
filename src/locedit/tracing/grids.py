"""Reading tracing grids written by any version of the workflow (pandas only: the plot jobs
import it without torch)."""

from __future__ import annotations

import pandas as pd


def with_endpoints(grid: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """``grid`` with ``score_clean`` / ``score_corrupt``, each run's clean and corrupted values;
    a grid written before runs carried their own (only the paper's Gaussian-noise kinds then)
    takes the facts' ``p_clean`` / ``p_noised``."""
    if {"score_clean", "score_corrupt"} <= set(grid.columns):
        return grid
    f = facts.set_index("case_id")
    value = lambda col: grid["case_id"].map(f[col]) if col in f.columns else float("nan")  # noqa: E731
    return grid.assign(score_clean=value("p_clean"), score_corrupt=value("p_noised"))
