"""Tracing figures: per-fact heatmaps (paper Fig. 2) and the peak-layer histogram (Fig. 1).

Layers are 0-indexed in every table and labelled 1-indexed on the axes, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import locedit.figures  # noqa: F401  (first: the Agg backend and the one style)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from locedit.registry.kinds import TRACE_KINDS

KIND_TITLES = {k.name: k.label for k in TRACE_KINDS.values()}
KIND_CMAPS = {k.name: k.cmap for k in TRACE_KINDS.values()}



def plot_trace_heatmaps(
    grid: pd.DataFrame, facts: pd.DataFrame, case_ids: Sequence[int], target_col: str = "target"
):
    """One heatmap per (fact, tracing run): rows = prompt tokens (subject starred), cols = layers.

    Args:
        grid: the long-format grid table (``kind == "zero"`` rows are ignored).
        facts: the per-fact table (``p_clean``, ``p_noised``, target).
        case_ids: facts to draw, one figure row each.
    Returns:
        The matplotlib figure.
    """
    trace = grid[grid["kind"] != "zero"]
    runs = trace[["kind", "window"]].drop_duplicates().sort_values(["kind", "window"])
    runs = list(runs.itertuples(index=False, name=None))
    n_rows, n_cols = max(1, len(case_ids)), max(1, len(runs))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.6 * n_rows), squeeze=False)
    f = facts.set_index("case_id")
    for i, cid in enumerate(case_ids):
        for j, (kind, window) in enumerate(runs):
            ax = axes[i][j]
            cells = trace[
                (trace["case_id"] == cid) & (trace["kind"] == kind) & (trace["window"] == window)
            ]
            mat = cells.pivot(index="token_index", columns="layer", values="p_restored")
            toks = cells.drop_duplicates("token_index").set_index("token_index")
            labels = [
                repr(toks.loc[t, "token"])[1:-1] + ("*" if toks.loc[t, "is_subject"] else "")
                for t in mat.index
            ]
            sns.heatmap(
                mat.to_numpy(),
                ax=ax,
                cmap=KIND_CMAPS.get(kind, "Greens"),
                cbar_kws={"label": f"p({f.loc[cid, target_col]})", "format": "%.2g"},
                xticklabels=[str(c + 1) for c in mat.columns],
                yticklabels=labels,
            )
            ax.set_xlabel(f"Center of {window} restored layers" if window > 1 else "Layer")
            ax.set_ylabel("")
            ax.tick_params(axis="y", rotation=0)
            ax.set_title(
                f"{KIND_TITLES.get(kind, kind)} tracing (window {window})\n"
                f"Orig p: {f.loc[cid, 'p_clean']:.3g}, noised p: {f.loc[cid, 'p_noised']:.3g}",
                fontsize=9,
            )
    if not case_ids or not runs:
        axes[0][0].text(0.5, 0.5, "no traced facts", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


def plot_peak_layers(
    peaks: pd.DataFrame, n_layers: int, edit_layers: Sequence[int], kind: str, window: int
):
    """Histogram of the layer where each fact's tracing effect peaks (paper Fig. 1).

    Args:
        peaks: ``case_id, layer`` (0-indexed) from :func:`locedit.tracing_tables.peak_layers`.
        edit_layers: 0-indexed layers edited in the editing stage, marked with dashed lines.
    """
    fig, ax = plt.subplots(figsize=(6, 3.2))
    counts = np.bincount(peaks["layer"].to_numpy(dtype=int), minlength=n_layers)[:n_layers]
    sns.barplot(x=np.arange(1, n_layers + 1), y=counts, ax=ax, color="#4c72b0")
    for k, layer in enumerate(edit_layers):
        if 0 <= layer < n_layers:  # bar positions are 0..n_layers-1 for labels 1..n_layers
            ax.axvline(
                layer, color="#c44e52", ls="--", lw=1.2, label="edit layers" if k == 0 else None
            )
    if len(edit_layers):
        ax.legend(frameon=False)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Layer where the tracing effect peaks")
    ax.set_ylabel("Number of facts")
    ax.set_title(
        f"How often does Causal Tracing peak in each layer? ({KIND_TITLES.get(kind, kind)}, "
        f"window {window}, n={len(peaks)})",
        fontsize=9,
    )
    if n_layers > 16:
        for i, lab in enumerate(ax.get_xticklabels()):
            lab.set_visible(i % 2 == 0)
    fig.tight_layout()
    return fig
