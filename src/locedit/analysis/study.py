"""Every regression one run writes, from the edit_vs_trace table.

``run_study`` returns the frames behind ``regression*.csv``:

- ``main``: the paper's models with the default tracing feature (window ``window``, fractional,
  max over tokens) on all known facts, plus the robust columns of ``robust.ROBUST_COLUMNS``.
- ``layer_correlations``: per-layer Pearson correlations for every tracing feature.
- ``concentrated``: the main models on the App. B concentrated subset.
- ``windows``: the main models with the trace effect of each traced window (Fig. 12).
- ``features``: the main models with the alternative localisation features (last subject token,
  absolute effect, representation zeroing; Figs 14, 16, 21) and attribution patching's estimate.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

from locedit.analysis import METRICS
from locedit.analysis.join import ESTIMATE_KINDS, LOCALIZER_KINDS
from locedit.analysis.regression import GROUP_KEYS, cell_frame, fit_all, layer_correlations
from locedit.analysis.robust import ROBUST_COLUMNS, RobustSettings, robust_cell
from locedit.seeds import cell_seed

log = logging.getLogger(__name__)

# Alternative localisation features regressed like trace_effect (Figs 14, 16, 21), and beyond
# the paper each other localizer: attribution patching's estimates, and tracing with other
# corruption, direction or metric (the run's traced ones; locedit.registry.kinds).
LOCALIZER_FEATURES = [f"{k}_effect" for k in LOCALIZER_KINDS]
ALT_FEATURES = ["trace_effect_last", "trace_effect_abs_last", *LOCALIZER_FEATURES]
CORR_FEATURES = [
    "trace_effect",
    "trace_effect_last",
    "trace_effect_abs",
    "trace_effect_abs_last",
    "zero_effect",
    "zero_effect_last",
] + [f"{k}_effect{s}" for k in ESTIMATE_KINDS for s in ("", "_last")]


def window_columns(df: pd.DataFrame) -> dict[int, str]:
    """``{window: column}`` for the ``trace_effect_w{w}`` columns of the joined table."""
    out = {}
    for c in df.columns:
        m = re.fullmatch(r"trace_effect_w(\d+)", c)
        if m:
            out[int(m.group(1))] = c
    return dict(sorted(out.items()))


def add_robust(reg: pd.DataFrame, df: pd.DataFrame, settings: RobustSettings) -> pd.DataFrame:
    """Append the ``robust`` columns to every ``status == "ok"`` row of ``reg``."""
    metric_ids = {m: i for i, m in enumerate(METRICS)}
    groups = dict(iter(df.groupby(GROUP_KEYS, sort=True)))
    rows = []
    for i, r in reg.iterrows():
        if r["status"] != "ok":
            rows.append({k: float("nan") for k in ROBUST_COLUMNS})
            continue
        d = cell_frame(groups[(r["variant"], r["method"])], METRICS[r["metric"]], r["feature"])
        # Seeded by the cell's identity, so adding a cell never changes another's draws.
        cseed = cell_seed(settings.seed, r["variant"], r["method"], metric_ids[r["metric"]])
        rows.append(robust_cell(d, settings, cseed))
    return pd.concat(
        [reg.reset_index(drop=True), pd.DataFrame(rows, columns=ROBUST_COLUMNS)], axis=1
    )


def _localizer_tests(features: pd.DataFrame, df: pd.DataFrame, robust: RobustSettings) -> pd.DataFrame:
    """``features`` with the ``robust`` columns on the rewrite rows of the other localizers
    (:data:`LOCALIZER_FEATURES`), so the summary can say which predicts edit success best (NaN
    on the other rows: the last-token and absolute effects are the paper's robustness checks)."""
    tested = features["feature"].isin(LOCALIZER_FEATURES) & (features["metric"] == "rewrite")
    if not tested.any():
        return features.reindex(columns=[*features.columns, *ROBUST_COLUMNS])
    done = add_robust(features[tested], df, robust).set_axis(features.index[tested])
    rest = features[~tested].reindex(columns=done.columns)
    return pd.concat([done, rest]).loc[features.index].reset_index(drop=True)


def run_study(
    df: pd.DataFrame,
    window: int,
    metrics: list[str],
    robustness_metrics: list[str],
    min_rows: int,
    robust: RobustSettings = RobustSettings(),
) -> dict[str, pd.DataFrame]:
    """All regression tables of a run (see module docstring).

    ``metrics`` go into ``main`` and the correlations; the concentrated, window and feature
    re-runs use ``robustness_metrics`` (the paper shows them for rewrite, and overall in text).
    """
    out = {}
    main = fit_all(df, "trace_effect", metrics, min_rows).assign(window=window, subset="all")
    out["main"] = add_robust(main, df, robust)
    # features of localisations the run did not trace (all NaN) have no correlations to report
    corr = [f for f in CORR_FEATURES if f in df.columns and df[f].notna().any()]
    out["layer_correlations"] = layer_correlations(df, corr, metrics).assign(window=window)
    rmetrics = [m for m in robustness_metrics if m in metrics] or metrics
    conc = df[df["concentrated"]]
    out["concentrated"] = fit_all(conc, "trace_effect", rmetrics, min_rows).assign(
        window=window,
        subset="concentrated",
        n_concentrated_cases=conc["case_id"].nunique(),
        n_all_cases=df["case_id"].nunique(),
    )
    out["windows"] = pd.concat(
        [
            fit_all(df, col, rmetrics, min_rows).assign(window=w, subset="all")
            for w, col in window_columns(df).items()
        ],
        ignore_index=True,
    )
    feats = [f for f in ALT_FEATURES if f in df.columns and df[f].notna().any()]
    out["features"] = (
        pd.concat(
            [fit_all(df, f, rmetrics, min_rows).assign(window=window, subset="all") for f in feats],
            ignore_index=True,
        )
        if feats
        else fit_all(df.iloc[0:0], "trace_effect", rmetrics, min_rows)  # header only
    )
    out["features"] = _localizer_tests(out["features"], df, robust)
    for name, frame in out.items():
        log.info("%s: %d rows", name, len(frame))
    return out
