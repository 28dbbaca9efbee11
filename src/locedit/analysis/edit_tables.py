"""Tables of per-edit quantities beyond the paper's regressions (how often edits collapse the
model; R² with each localisation method), and the row layout every table shares: problems and
methods in the paper's order, each problem printed once."""

from __future__ import annotations

import pandas as pd

from locedit.analysis import METHOD_LABELS, METHODS, VARIANT_LABELS, VARIANTS
from locedit.analysis.join import LOCALIZER_KINDS
from locedit.registry.kinds import TRACE_KINDS


def paper_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``df`` (``variant``, ``method`` columns) in the paper's order, then any others."""
    v = {k: i for i, k in enumerate(VARIANTS)}
    m = {k: i for i, k in enumerate(METHODS)}
    return (
        df.assign(_v=df["variant"].map(v).fillna(99), _m=df["method"].map(m).fillna(99))
        .sort_values(["_v", "_m", "variant", "method"])
        .drop(columns=["_v", "_m"])
    )


def row_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The ``Problem`` and ``Method`` label columns of ``df``'s rows."""
    out = pd.DataFrame(
        {
            "Problem": df["variant"].map(VARIANT_LABELS).fillna(df["variant"]),
            "Method": df["method"].map(METHOD_LABELS).fillna(df["method"]),
        }
    )
    # Print each problem once, as the paper does.
    out.loc[out["Problem"].duplicated(), "Problem"] = ""
    return out


def _percent(value) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def collapse_table(edits: pd.DataFrame) -> pd.DataFrame:
    """Percent of edits flagged ``collapsed`` per (problem, method) row and 0-indexed edit layer
    column, plus the row's overall rate and its number of edits."""
    need = {"variant", "method", "layer", "collapsed"}
    if edits.empty or not need <= set(edits.columns):
        return pd.DataFrame(columns=["Problem", "Method"])
    df = edits.assign(collapsed=edits["collapsed"].astype(bool))
    keys = ["variant", "method"]
    rates = df.pivot_table(index=keys, columns="layer", values="collapsed", aggfunc="mean",
                           observed=True)  # fmt: skip
    layers = [f"layer {int(layer)}" for layer in rates.columns]  # tables are 0-indexed
    rates.columns = layers
    overall = df.groupby(keys, observed=True)["collapsed"].agg(["mean", "size"])
    cells = paper_order(rates.join(overall).reset_index()).reset_index(drop=True)
    out = row_labels(cells)
    for col in layers:
        out[col] = [_percent(v) for v in cells[col]]
    out["all layers"] = [_percent(v) for v in cells["mean"]]
    out["n"] = cells["size"].astype(int).to_numpy()
    return out


#: Columns of :func:`generation_table`: (edits column, label); means over a row's edits.
GENERATION = [
    ("rewrite_score", "Rewrite score"), ("efficacy_success", "p(new) > p(old)"),
    ("gen_rewrite_score", "Rewrite generated"), ("paraphrase_success", "Paraphrase p(new) > p(old)"),
    ("gen_paraphrase_score", "Paraphrase generated"), ("gen_neighborhood_score", "Neighborhood generation kept"),
]  # fmt: skip


def generation_table(edits: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, method): the teacher-forced measures of success beside the generated ones
    (greedy decoding produces the answer; fact erasure: no longer produces it), means over the
    row's edits, in percent (the rewrite score as a fraction)."""
    have = [(c, label) for c, label in GENERATION if c in edits.columns]
    if edits.empty or "gen_rewrite_score" not in edits.columns or edits["gen_rewrite_score"].isna().all():
        return pd.DataFrame(columns=["Problem", "Method"])
    means = edits.groupby(["variant", "method"], observed=True)[[c for c, _ in have]].mean()
    cells = paper_order(means.join(edits.groupby(["variant", "method"], observed=True).size().rename("n"))
                        .reset_index()).reset_index(drop=True)  # fmt: skip
    out = row_labels(cells)
    for col, label in have:
        out[label] = [_fmt(v) if col == "rewrite_score" else _percent(v) for v in cells[col]]
    out["n"] = cells["n"].astype(int).to_numpy()
    return out


#: Localisation features compared in :func:`localizer_table`: (column, label), the paper's
#: tracing first, then every other localizer of the registry (short names for the two best known).
_SHORT = {"zero": "Zeroing", "atp": "AtP"}
LOCALIZERS = [("trace_effect", "Tracing")] + [
    (f"{k}_effect", _SHORT.get(k, TRACE_KINDS[k].label)) for k in LOCALIZER_KINDS
]


def localizer_table(main: pd.DataFrame, features: pd.DataFrame, metric: str = "rewrite") -> pd.DataFrame:
    """Per (problem, method): R² of the layer alone, then R² of Layer + feature ("Both") and its
    gain over the layer ("Diff") for each localisation method that was run: exact tracing,
    representation zeroing and attribution patching (the cheap first-order estimate). Does a
    cheaper localisation predict edit success any better or worse?"""
    frames = [f for f in (main, features) if len(f) and "feature" in f.columns]
    if not frames:
        return pd.DataFrame(columns=["Problem", "Method"])
    reg = pd.concat(frames, ignore_index=True)
    reg = reg[(reg["metric"] == metric) & (reg["status"] == "ok")]
    present = [(col, label) for col, label in LOCALIZERS if col in set(reg["feature"])]
    cells = paper_order(reg[["variant", "method"]].drop_duplicates()).reset_index(drop=True)
    by_cell = reg.set_index(["variant", "method", "feature"])
    out = row_labels(cells)
    layer = reg.groupby(["variant", "method"])["r2_layer"].first()
    out["Layer"] = [_fmt(layer[(v, m)]) for v, m in zip(cells["variant"], cells["method"])]
    for col, label in present:
        for stat, name in (("r2_both", "Both"), ("r2_diff", "Diff")):
            out[f"{label} {name}"] = [
                _fmt(by_cell[stat].get((v, m, col))) for v, m in zip(cells["variant"], cells["method"])
            ]
    return out


def peak_table(tracing: pd.DataFrame, base: tuple[str, int]) -> pd.DataFrame:
    """Where each traced run (kind, window) peaks: per fact the layer of the largest effect
    (max over tokens), summarised over the facts it traced; and how often its peak is the
    ``base`` run's (the regressions' localizer). Layers 1-indexed, as in the figures."""
    ok = tracing[(tracing["status"] == "ok") & tracing["effect_frac_max"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=["Localizer", "Window", "facts"])
    peaks = ok.loc[ok.groupby(["kind", "window", "case_id"])["effect_frac_max"].idxmax(),
                   ["kind", "window", "case_id", "layer"]]  # fmt: skip
    peaks["layer"] += 1
    by_run = {run: p.set_index("case_id")["layer"] for run, p in peaks.groupby(["kind", "window"])}
    ref = by_run.get(base)
    rows = []
    for (kind, window), layer in sorted(by_run.items(), key=lambda kv: (kv[0] != base, kv[0])):
        counts = layer.value_counts()
        q = layer.quantile([0.25, 0.5, 0.75])
        same = "–"
        if ref is not None and (kind, window) != base:
            common = layer.index.intersection(ref.index)
            same = f"{(layer[common] == ref[common]).mean():.0%}" if len(common) else "–"
        rows.append({
            "Localizer": TRACE_KINDS[kind].label if kind in TRACE_KINDS else kind, "Window": int(window),
            "facts": len(layer), "peak layer, median [quartiles]": f"{q[0.5]:.0f} [{q[0.25]:.0f}, {q[0.75]:.0f}]",
            "most common peak": f"{int(counts.index[0])} ({counts.iloc[0] / len(layer):.0%})",
            "distinct peaks": int(counts.size), f"same peak as {base[0]}/{base[1]}": same,
        })  # fmt: skip
    return pd.DataFrame(rows)


def best_localizers(main: pd.DataFrame, features: pd.DataFrame, alpha: float) -> list[tuple[str, str]]:
    """Per editing problem, the localizer whose rewrite-score gain over the layer (Diff R²,
    averaged over the problem's methods) is largest, in how many methods its gain passes the
    fact-aware test (wild cluster bootstrap) at ``alpha``, and how many (localizer, method) pairs
    pass it against how many would by chance: ``[(quantity, value)]`` rows of the summary. Only
    localizers the run traced compete."""
    frames = [f for f in (main, features) if len(f) and "wald_pvalue_wild" in f.columns]
    if not frames:
        return []
    reg = pd.concat(frames, ignore_index=True)
    labels = dict(LOCALIZERS)
    reg = reg[(reg["metric"] == "rewrite") & (reg["status"] == "ok") & reg["feature"].isin(labels)]
    rows = []
    for variant in [v for v in VARIANTS if v in set(reg["variant"])]:
        cells = reg[reg["variant"] == variant]
        mean = cells.groupby("feature")["r2_diff"].mean().sort_values(ascending=False, kind="stable")
        if mean.empty:
            continue
        best = mean.index[0]
        mine = cells[cells["feature"] == best]
        tested = cells["wald_pvalue_wild"].notna()
        passed = int((cells["wald_pvalue_wild"] < alpha).sum())
        rows.append((
            f"best localizer, {VARIANT_LABELS[variant]} (rewrite, of {len(mean)})",
            f"{labels[best]}: mean Diff R² {_fmt(mean.iloc[0])}, wild bootstrap p < {alpha} in "
            f"{int((mine['wald_pvalue_wild'] < alpha).sum())} of {len(mine)} methods; all localizers: "
            f"{passed} of {int(tested.sum())} (localizer, method) pairs, {alpha * tested.sum():.1f} "
            "expected by chance",
        ))  # fmt: skip
    return rows


def _fmt(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.3f}"
