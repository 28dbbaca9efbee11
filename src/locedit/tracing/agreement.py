"""How well attribution patching's first-order estimate agrees with exact Causal Tracing.

For every estimating kind (``atp``) and every window traced both ways, per fact:

* ``rho_cells``: Spearman rank correlation of the restored probabilities over the (token, layer)
  cells from the subject's first token on (earlier tokens are p_noised in both, exactly);
* ``peak_exact`` / ``peak_estimate``: the layer where each one's ``effect_frac_max`` peaks.

The summary gives, per (kind, window), the facts compared, the median and quartiles of
``rho_cells``, how often the peak layers coincide (or lie within one layer) and the rank
correlation of the two peak layers across facts.
"""

from __future__ import annotations

import locedit.figures  # noqa: F401  (first: the Agg backend and the one style)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import spearmanr

from locedit.registry.kinds import TRACE_KINDS, estimate_pairs
from locedit.tracing.tables import peak_layers

AGREEMENT_COLUMNS = ["case_id", "kind", "exact_kind", "window", "n_cells", "rho_cells",
                     "peak_exact", "peak_estimate"]  # fmt: skip


def agreement(grid: pd.DataFrame, effects: pd.DataFrame, facts: pd.DataFrame, runs) -> pd.DataFrame:
    """Per (fact, estimate kind, window): :data:`AGREEMENT_COLUMNS` (module docstring).

    Args:
        grid: ``tracing/grid.parquet``; effects: ``tracing.parquet``; facts:
            ``tracing/facts.parquet`` (``subject_start``, ``status``).
        runs: ``tracing.runs``.
    """
    ok = facts.loc[facts["status"] == "ok", ["case_id", "subject_start"]]
    start = dict(zip(ok["case_id"], ok["subject_start"].astype(int)))
    rows = []
    for kind, exact, window in estimate_pairs(runs):
        cells = {k: grid[(grid["kind"] == k) & (grid["window"] == window)] for k in (kind, exact)}
        joined = cells[exact].merge(cells[kind], on=["case_id", "token_index", "layer"],
                                    suffixes=("_exact", "_estimate"))  # fmt: skip
        peaks = {
            k: peak_layers(effects, k, window).set_index("case_id")["layer"] for k in (kind, exact)
        }
        for case_id, d in joined.groupby("case_id", sort=True):
            if case_id not in start:
                continue
            d = d[d["token_index"] >= start[case_id]]
            x, y = d["p_restored_exact"].to_numpy(), d["p_restored_estimate"].to_numpy()
            constant = np.ptp(x) == 0 or np.ptp(y) == 0
            rows.append({
                "case_id": int(case_id), "kind": kind, "exact_kind": exact, "window": int(window),
                "n_cells": len(d), "rho_cells": np.nan if constant else float(spearmanr(x, y).statistic),
                "peak_exact": peaks[exact].get(case_id, np.nan),
                "peak_estimate": peaks[kind].get(case_id, np.nan),
            })  # fmt: skip
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    return out.astype({"peak_exact": "float64", "peak_estimate": "float64", "rho_cells": "float64"})


def agreement_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, window): facts, median ρ [quartiles], same peak layer %, within one layer %."""
    rows = []
    for (kind, exact, window), d in table.groupby(["kind", "exact_kind", "window"], sort=True):
        rho = d["rho_cells"].dropna()
        both = d.dropna(subset=["peak_exact", "peak_estimate"])
        gap = (both["peak_exact"] - both["peak_estimate"]).abs()
        rows.append({
            "Estimate": TRACE_KINDS[kind].label, "of": TRACE_KINDS[exact].label, "Window": int(window),
            "Facts": len(d),
            "median ρ (cells)": f"{rho.median():.3f}" if len(rho) else "–",
            "ρ quartiles": f"{rho.quantile(0.25):.3f} – {rho.quantile(0.75):.3f}" if len(rho) else "–",
            "same peak layer": f"{100 * (gap == 0).mean():.1f}%" if len(gap) else "–",
            "peak within 1 layer": f"{100 * (gap <= 1).mean():.1f}%" if len(gap) else "–",
            "ρ of peak layers (facts)": _rank_corr(both["peak_exact"], both["peak_estimate"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _rank_corr(x: pd.Series, y: pd.Series) -> str:
    """Spearman ρ across facts, or a dash where it is undefined (constant or < 3 facts)."""
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return "–"
    return f"{spearmanr(x, y).statistic:.3f}"


def plot_agreement(table: pd.DataFrame, n_layers: int) -> plt.Figure:
    """Left: per-fact ρ over cells, one box per (kind, window). Right: peak layer of the estimate
    against exact tracing's, per window (1-indexed; the diagonal is agreement)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    if table.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no attribution-patching run with its exact run traced",
                    ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        return fig
    d = table.assign(run=[f"{TRACE_KINDS[k].name}, w={w}" for k, w in zip(table["kind"], table["window"])])
    sns.boxplot(data=d, x="run", y="rho_cells", ax=axes[0], color="tab:orange")
    axes[0].set(xlabel="", ylabel="Spearman ρ, estimate vs exact (cells)", ylim=(-1.05, 1.05))
    axes[0].axhline(0, color="grey", lw=0.8)
    peaks = d.dropna(subset=["peak_exact", "peak_estimate"])
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(len(peaks), 2))
    for (run, part), color in zip(peaks.groupby("run"), sns.color_palette()):
        idx = peaks.index.get_indexer(part.index)
        axes[1].scatter(part["peak_exact"] + 1 + jitter[idx, 0], part["peak_estimate"] + 1 + jitter[idx, 1],
                        s=12, alpha=0.6, label=run, color=color)  # fmt: skip
    axes[1].plot([1, n_layers], [1, n_layers], color="grey", lw=0.8)
    axes[1].set(xlabel="peak layer, exact tracing", ylabel="peak layer, estimate")
    axes[1].legend(fontsize=7)
    fig.suptitle("Attribution patching against exact Causal Tracing, per fact")
    fig.tight_layout()
    return fig
