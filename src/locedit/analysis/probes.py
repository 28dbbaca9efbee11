"""Tables of the generalisation probes (:mod:`locedit.editing.probes`): what each edit did beyond
its own prompts, per problem × method × edit layer, and whether tracing predicts it.

Read from ``edit_vs_trace.parquet`` and ``regression.csv`` only; never a model.
"""

from __future__ import annotations

import pandas as pd

from locedit.analysis.edit_tables import paper_order, row_labels
from locedit.editing.probes import PROBE_LABELS, PROBE_METRICS


def _fmt(value, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):+.3f}" if signed else f"{float(value):.3f}"


def probed(edits: pd.DataFrame) -> pd.DataFrame:
    """The edits with at least one probe scored (empty when probes were off)."""
    cols = [c for c in PROBE_METRICS.values() if c in edits.columns]
    if edits.empty or not cols:
        return edits.iloc[0:0]
    return edits[edits[cols].notna().any(axis=1)]


def probe_table(edits: pd.DataFrame) -> pd.DataFrame:
    """Mean of every probe per (problem, method, 1-indexed edit layer), with the rewrite score
    next to them and ``n`` edits; over-reach columns are signed (p_post(y) - p_pre(o))."""
    df = probed(edits)
    if df.empty:
        return pd.DataFrame(columns=["Problem", "Method", "Layer"])
    cols = ["rewrite_score", *PROBE_METRICS.values()]
    keys = ["variant", "method", "layer"]
    agg = (
        df.groupby(keys, observed=True)[cols]
        .mean()
        .join(df.groupby(keys, observed=True).size().rename("n"))
    )
    cells = paper_order(agg.reset_index()).reset_index(drop=True)
    out = row_labels(cells)
    out["Layer"] = (cells["layer"].astype(int) + 1).to_numpy()
    out["Rewrite"] = [_fmt(v) for v in cells["rewrite_score"]]
    for metric, col in PROBE_METRICS.items():
        signed = metric.startswith("overreach")
        out[PROBE_LABELS[metric]] = [_fmt(v, signed) for v in cells[col]]
    out["n"] = cells["n"].astype(int).to_numpy()
    return out


def probe_counts(edits: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, method): edits probed and how many had each route known before the edit
    (the probes score only those), so a reader sees what each mean stands on."""
    df = probed(edits)
    if df.empty:
        return pd.DataFrame(columns=["Problem", "Method"])
    counts = df.groupby(["variant", "method"], observed=True).agg(
        edits=("case_id", "size"),
        alias=("alias_score", "count"),
        description=("description_score", "count"),
        reverse=("reverse_score", "count"),
        others=("overreach_other_subjects", "count"),
        generic=("overreach_generic", "count"),
    )
    cells = paper_order(counts.reset_index()).reset_index(drop=True)
    out = row_labels(cells)
    labels = {
        "edits": "Edits",
        "alias": "Alias known",
        "description": "Description known",
        "reverse": "Reverse known",
        "others": "Over-reach, others",
        "generic": "Over-reach, generic",
    }
    for col, label in labels.items():
        out[label] = cells[col].astype(int).to_numpy()
    return out


def probe_regression_table(main: pd.DataFrame, metric_stat: str = "r2_diff") -> pd.DataFrame:
    """Per (problem, method): the layer-only R² and tracing's gain over it (``Diff``) with each
    probe as the outcome, beside the rewrite score's: does tracing predict the probes any better
    than it predicts rewrite success?"""
    if main.empty or "metric" not in main.columns:
        return pd.DataFrame(columns=["Problem", "Method"])
    reg = main[main["metric"].isin(["rewrite", *PROBE_METRICS]) & (main["status"] == "ok")]
    probes_fit = reg[reg["metric"].isin(list(PROBE_METRICS))]
    if probes_fit.empty:
        return pd.DataFrame(columns=["Problem", "Method"])
    cells = paper_order(probes_fit[["variant", "method"]].drop_duplicates()).reset_index(drop=True)
    by = reg.set_index(["variant", "method", "metric"])
    out = row_labels(cells)
    for metric in ["rewrite", *PROBE_METRICS]:
        label = "Rewrite" if metric == "rewrite" else PROBE_LABELS[metric]
        for stat, name in (("r2_layer", "Layer"), (metric_stat, "Diff")):
            out[f"{label} {name}"] = [
                _fmt(by[stat].get((v, m, metric)))
                for v, m in zip(cells["variant"], cells["method"])
            ]
    return out


def probe_sections(edits: pd.DataFrame, main: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """The sections of ``analysis/tables/generalisation_probes`` (title, frame, note)."""
    return [
        (
            "Generalisation probes by edit layer (means)",
            probe_table(edits),
            "Alias / description: rewrite score of the new object through the subject's alias or "
            "description; Reverse: recovered fraction of p(subject | reverse prompt with the new "
            "object); Reverse old kept: fraction of p(subject | reverse prompt with the old object) "
            "left; Over-reach: p_post(new) - p_pre(old) on other subjects' prompts of the relation "
            "and on generic prompts naming the subject. Routes the model did not answer before "
            "the edit are not scored.",
        ),
        (
            "Probed edits and known routes",
            probe_counts(edits),
            "Edits (fact × edit layer) probed, and those whose route the model answered "
            "greedily before the edit (the scored ones).",
        ),
        (
            "Does tracing predict the probes? R² of layer alone and tracing's gain (Diff)",
            probe_regression_table(main),
            "Same regressions as Tables 1-6, with each probe as the outcome.",
        ),
    ]
