"""Tables of per-edit quantities beyond the paper's regressions: how often edits collapse the
model (``collapsed`` of ``edits.parquet``), per problem, method and edit layer."""

from __future__ import annotations

import pandas as pd

from locedit.analysis import METHOD_LABELS, METHODS, VARIANT_LABELS, VARIANTS


def collapse_table(edits: pd.DataFrame) -> pd.DataFrame:
    """Percent of edits flagged ``collapsed`` per (problem, method) row and 1-indexed edit layer
    column, plus the row's overall rate and its number of edits; problems and methods in the
    paper's order (then any others)."""
    need = {"variant", "method", "layer", "collapsed"}
    if edits.empty or not need <= set(edits.columns):
        return pd.DataFrame(columns=["Problem", "Method"])
    df = edits.assign(collapsed=edits["collapsed"].astype(bool))
    rates = df.pivot_table(index=["variant", "method"], columns="layer", values="collapsed",
                           aggfunc="mean", observed=True)  # fmt: skip
    overall = df.groupby(["variant", "method"], observed=True)["collapsed"].agg(["mean", "size"])
    order = {k: i for i, k in enumerate(list(VARIANTS) + list(METHODS))}
    keys = sorted(rates.index, key=lambda vm: (order.get(vm[0], 99), vm[0], order.get(vm[1], 99), vm[1]))
    rows = []
    for variant, method in keys:
        row = {"Problem": VARIANT_LABELS.get(variant, variant), "Method": METHOD_LABELS.get(method, method)}
        for layer in rates.columns:
            value = rates.loc[(variant, method), layer]
            row[f"layer {int(layer) + 1}"] = "–" if pd.isna(value) else f"{100 * value:.1f}%"
        row["all layers"] = f"{100 * overall.loc[(variant, method), 'mean']:.1f}%"
        row["n"] = int(overall.loc[(variant, method), "size"])
        rows.append(row)
    out = pd.DataFrame(rows)
    out.loc[out["Problem"].duplicated(), "Problem"] = ""  # each problem once, as the paper prints
    return out


#: Localisation features compared in :func:`localizer_table`: (column, label).
LOCALIZERS = [("trace_effect", "Tracing"), ("zero_effect", "Zeroing"), ("atp_effect", "AtP")]


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
    order = {k: i for i, k in enumerate(list(VARIANTS) + list(METHODS))}
    cells = sorted({(v, m) for v, m in zip(reg["variant"], reg["method"])},
                   key=lambda vm: (order.get(vm[0], 99), vm[0], order.get(vm[1], 99), vm[1]))  # fmt: skip
    rows = []
    for variant, method in cells:
        cell = reg[(reg["variant"] == variant) & (reg["method"] == method)].set_index("feature")
        row = {"Problem": VARIANT_LABELS.get(variant, variant), "Method": METHOD_LABELS.get(method, method)}
        row["Layer"] = _fmt(cell["r2_layer"].iloc[0])
        for col, label in present:
            r = cell.loc[col] if col in cell.index else None
            row[f"{label} Both"] = _fmt(None if r is None else r["r2_both"])
            row[f"{label} Diff"] = _fmt(None if r is None else r["r2_diff"])
        rows.append(row)
    out = pd.DataFrame(rows)
    out.loc[out["Problem"].duplicated(), "Problem"] = ""
    return out


def _fmt(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.3f}"
