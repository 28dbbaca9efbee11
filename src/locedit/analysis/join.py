"""The per-edit analysis table: every edit joined with the tracing effect at its central layer.

Paper-spec §8.1 / the authors' R notebook cell 18: editing rows are left-joined on
``(case_id, layer == edit central layer)`` with the MLP tracing effect at that layer; only facts
the model knows (``is_correct``) are kept. Layers are 0-indexed throughout.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from locedit.registry.kinds import TRACE_KINDS
from locedit.registry.variants import VARIANTS

log = logging.getLogger(__name__)

EDIT_KEYS = ["case_id", "variant", "method", "layer"]
TRACE_VALUE_COLUMNS = ["effect_frac_max", "effect_frac_last", "effect_abs_max", "effect_abs_last"]


#: Tracing kinds that estimate a restoration (attribution patching): each becomes the
#: ``{kind}_effect`` / ``{kind}_effect_last`` features of the joined table.
ESTIMATE_KINDS = [k.name for k in TRACE_KINDS.values() if k.estimates is not None]
#: Every localizer regressed beside the paper's tracing (zeroing, attribution patching, and the
#: restorations with other corruption, direction or metric): ``{kind}_effect`` features. Zeroing's
#: and the estimates' columns are always present (NaN when not traced), the others when traced.
LOCALIZER_KINDS = [k.name for k in TRACE_KINDS.values() if k.alternative]

def _check_columns(df: pd.DataFrame, needed: list[str], name: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; has {list(df.columns)}")


def trace_curves(tracing: pd.DataFrame, kind: str, window: int | None) -> pd.DataFrame:
    """Per (case_id, layer) tracing values of one kind and window (``status == "ok"`` rows only).

    Args:
        tracing: tracing.parquet rows.
        kind: mlp | attn | hidden | zero.
        window: tracing window; None takes the kind's only window (an error if it has several).

    Returns:
        Frame indexed by ``(case_id, layer)`` with the ``effect_*`` columns.
    """
    rows = tracing[(tracing["kind"] == kind) & (tracing["status"] == "ok")]
    if window is None:
        windows = sorted(rows["window"].unique())
        if len(windows) > 1:
            raise ValueError(f"tracing kind {kind!r} has windows {windows}; name one")
    else:
        rows = rows[rows["window"] == window]
    dup = rows.duplicated(["case_id", "layer"])
    if dup.any():
        bad = rows.loc[dup, "case_id"].iloc[0]
        raise ValueError(
            f"tracing has duplicate rows for case_id {bad} (kind {kind}, window {window})"
        )
    return rows.set_index(["case_id", "layer"])[TRACE_VALUE_COLUMNS]


def concentrated_cases(
    curves: pd.DataFrame, rel_threshold: float = 0.5, max_other_layers: int = 3
) -> pd.DataFrame:
    """The App. B "concentrated tracing effects" heuristic, one row per case.

    A case is concentrated iff at most ``max_other_layers`` layers other than its argmax layer
    reach ``rel_threshold`` x its peak of the per-layer (max over tokens) fractional effect.
    Cases with no positive peak are never concentrated.

    Args:
        curves: ``trace_curves(...)`` output (index ``case_id, layer``).

    Returns:
        Columns ``case_id, peak_layer, peak_effect, n_near_peak, concentrated``.
    """
    cols = ["case_id", "peak_layer", "peak_effect", "n_near_peak", "concentrated"]
    if curves.empty:
        return pd.DataFrame(columns=cols).astype({"concentrated": bool})
    e = curves["effect_frac_max"].unstack("layer")  # [case, layer]
    arr = e.to_numpy(dtype=float)
    peak = np.nanmax(np.where(np.isnan(arr), -np.inf, arr), axis=1)
    peak_idx = np.argmax(np.where(np.isnan(arr), -np.inf, arr), axis=1)
    near = (arr >= rel_threshold * peak[:, None]) & ~np.isnan(arr)
    n_near = near.sum(axis=1) - 1  # the argmax layer itself does not count
    out = pd.DataFrame(
        {
            "case_id": e.index.to_numpy(),
            "peak_layer": e.columns.to_numpy()[peak_idx],
            "peak_effect": peak,
            "n_near_peak": n_near,
        }
    )
    out["concentrated"] = (out["peak_effect"] > 0) & (out["n_near_peak"] <= max_other_layers)
    return out


def build_edit_vs_trace(
    edits: pd.DataFrame,
    tracing: pd.DataFrame,
    facts: pd.DataFrame,
    window: int = 5,
    kind: str = "mlp",
    rel_threshold: float = 0.5,
    max_other_layers: int = 3,
    erasure_eligible_only: bool = True,
) -> pd.DataFrame:
    """One row per edit of a correctly known fact, with tracing features at its central layer.

    Added columns: ``trace_effect`` (fractional, max over tokens, ``window``), ``trace_effect_last``
    (fractional, last subject token), ``trace_effect_abs``/``trace_effect_abs_last`` (absolute),
    ``trace_effect_w{w}`` (fractional max for every traced window), ``zero_effect`` /
    ``zero_effect_last`` (representation zeroing, when traced), ``atp_effect`` / ``atp_effect_last``
    (attribution patching's estimate at ``window``, else its first traced window), ``overall_essence_score`` (mean of
    rewrite, paraphrase, neighborhood and essence; Fig. 9 right), ``peak_layer`` and
    ``concentrated`` (App. B heuristic at ``window``).

    Args:
        edits: edits.parquet rows (layer 0-indexed central layer).
        tracing: tracing.parquet rows.
        facts: facts.parquet rows (``case_id, is_correct, erasure_eligible``).
        window: the default tracing window (paper: 5).
        kind: the traced module kind the analysis uses (paper: mlp).
        rel_threshold, max_other_layers: concentrated-subset heuristic (App. B: 0.5, 3).
        erasure_eligible_only: keep Fact Erasure edits only for ``erasure_eligible`` facts
            (the paper's p >= .02 filter, n=489).
    """
    _check_columns(edits, EDIT_KEYS + ["rewrite_score"], "edits.parquet")
    _check_columns(
        tracing,
        ["case_id", "kind", "window", "layer", "status"] + TRACE_VALUE_COLUMNS,
        "tracing.parquet",
    )
    _check_columns(facts, ["case_id", "is_correct"], "facts.parquet")
    dup = edits.duplicated(EDIT_KEYS)
    if dup.any():
        raise ValueError(
            "edits.parquet has duplicate edits, first: "
            f"{edits.loc[dup, EDIT_KEYS].iloc[0].to_dict()}"
        )
    windows = sorted(int(w) for w in tracing.loc[tracing["kind"] == kind, "window"].unique())
    if window not in windows:
        raise ValueError(
            f"analysis.window={window} was not traced for kind {kind!r}; traced windows: {windows}"
        )

    known = facts.loc[facts["is_correct"].astype(bool), "case_id"]
    df = edits[edits["case_id"].isin(known)].copy()
    if erasure_eligible_only and "erasure_eligible" in facts.columns:
        eligible = set(facts.loc[facts["erasure_eligible"].astype(bool), "case_id"])
        only = [v.name for v in VARIANTS.values() if v.analysis_eligible_only]
        df = df[~df["variant"].isin(only) | df["case_id"].isin(eligible)]
    log.info("%d of %d edits are on known facts", len(df), len(edits))

    main = trace_curves(tracing, kind, window).rename(
        columns={
            "effect_frac_max": "trace_effect",
            "effect_frac_last": "trace_effect_last",
            "effect_abs_max": "trace_effect_abs",
            "effect_abs_last": "trace_effect_abs_last",
        }
    )
    feats = [main]
    for w in windows:
        feats.append(
            trace_curves(tracing, kind, w)[["effect_frac_max"]].rename(
                columns={"effect_frac_max": f"trace_effect_w{w}"}
            )
        )
    # The other localizers: their effects at `window`, else their first traced window.
    for name in LOCALIZER_KINDS:
        rows = tracing[tracing["kind"] == name]
        if len(rows):
            traced = sorted(rows["window"].unique())
            feats.append(
                trace_curves(tracing, name, window if window in traced else traced[0])[
                    ["effect_frac_max", "effect_frac_last"]
                ].rename(columns={"effect_frac_max": f"{name}_effect",
                                  "effect_frac_last": f"{name}_effect_last"})  # fmt: skip
            )
    features = pd.concat(feats, axis=1).reset_index()
    df = df.merge(features, on=["case_id", "layer"], how="left", validate="many_to_one")
    for name in ["zero", *ESTIMATE_KINDS]:
        if f"{name}_effect" not in df.columns:
            df[f"{name}_effect"] = np.nan
            df[f"{name}_effect_last"] = np.nan

    conc = concentrated_cases(trace_curves(tracing, kind, window), rel_threshold, max_other_layers)[
        ["case_id", "peak_layer", "concentrated"]
    ]
    df = df.merge(conc, on="case_id", how="left", validate="many_to_one")
    df["concentrated"] = df["concentrated"].fillna(False).astype(bool)

    parts = ["rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score"]
    if all(c in df.columns for c in parts):
        df["overall_essence_score"] = df[parts].mean(axis=1, skipna=False)
    missing = df["trace_effect"].isna().sum()
    if missing:
        log.warning(
            "%d edits have no tracing effect at their layer (status not ok or untraced)", missing
        )
    return df.sort_values(EDIT_KEYS, kind="stable").reset_index(drop=True)


def known_tracing(tracing: pd.DataFrame, facts: pd.DataFrame, kind: str = "mlp") -> pd.DataFrame:
    """Tracing rows of one kind, ``status == "ok"``, for correctly known facts (Figs 10, 11)."""
    known = facts.loc[facts["is_correct"].astype(bool), "case_id"]
    rows = tracing[(tracing["kind"] == kind) & (tracing["status"] == "ok")]
    return rows[rows["case_id"].isin(known)].reset_index(drop=True)
