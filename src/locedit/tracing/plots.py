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
from locedit.tracing.grids import with_endpoints

KIND_TITLES = {k.name: k.label for k in TRACE_KINDS.values()}
KIND_CMAPS = {k.name: k.cmap for k in TRACE_KINDS.values()}



#: Colour-bar labels per metric (``{}``: the target).
_METRIC_LABELS = {"prob": "p({})", "logprob": "log p({})", "logit_diff": "logit({}) − logit(other)"}


def _spec(kind: str):
    """The registry entry of ``kind`` (a kind it does not know reads as the paper's)."""
    return TRACE_KINDS.get(kind, TRACE_KINDS["mlp"])


def _is_estimate(kind: str) -> bool:
    """Whether a tracing kind estimates another's effect (attribution patching) rather than
    measuring it."""
    return kind in TRACE_KINDS and TRACE_KINDS[kind].estimates is not None


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
    trace = with_endpoints(grid[grid["kind"] != "zero"], facts)
    runs = trace[["kind", "window"]].drop_duplicates().sort_values(["kind", "window"])
    runs = list(runs.itertuples(index=False, name=None))
    n_rows, n_cols = max(1, len(case_ids)), max(1, len(runs))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.6 * n_rows), squeeze=False)
    f = facts.set_index("case_id")
    for i, cid in enumerate(case_ids):
        fact = trace[trace["case_id"] == cid]
        # One colour scale per fact and metric for the exact restorations, so its panels compare
        # by eye; attribution patching's first-order estimates (which can leave [0, 1]) keep theirs.
        exact = fact[[not _is_estimate(k) for k in fact["kind"]]]
        scales = {
            metric: (rows["p_restored"].min(), rows["p_restored"].max())
            for metric, rows in exact.groupby(exact["kind"].map(lambda k: _spec(k).metric))
        }
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
            if cells.empty:  # e.g. no partner subject for this fact's STR runs
                ax.set_axis_off()
                continue
            estimate, metric = _is_estimate(kind), _spec(kind).metric
            vmin, vmax = (None, None) if estimate else scales.get(metric, (None, None))
            target = _METRIC_LABELS[metric].format(f.loc[cid, target_col])
            sns.heatmap(
                mat.to_numpy(),
                ax=ax,
                vmin=vmin,
                vmax=vmax,
                cmap=KIND_CMAPS.get(kind, "Greens"),
                cbar_kws={"label": f"AtP estimate of {target}" if estimate else target, "format": "%.2g"},
                xticklabels=[str(c + 1) for c in mat.columns],
                yticklabels=labels,
            )
            ax.set_xlabel(f"Center of {window} restored layers" if window > 1 else "Layer")
            ax.set_ylabel("")
            ax.tick_params(axis="y", rotation=0)
            clean, corrupt = cells["score_clean"].iloc[0], cells["score_corrupt"].iloc[0]
            ax.set_title(
                f"{KIND_TITLES.get(kind, kind)} tracing (window {window})\n"
                f"clean: {clean:.3g}, corrupted: {corrupt:.3g}",
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


#: ROME's token groups (Meng et al. 2022, Fig. 1/2 averages), in display order.
TOKEN_GROUPS = ("first subject token", "middle subject tokens", "last subject token",
                "first subsequent token", "further tokens", "last token")


def token_groups(grid: pd.DataFrame, facts: pd.DataFrame) -> pd.Series:
    """ROME's token group of every grid row (index aligned): the prompt's last token wins over
    the subject or subsequent groups it may also belong to, as in ROME's averages."""
    span = facts.set_index("case_id")[["subject_start", "subject_end"]]
    s0 = grid["case_id"].map(span["subject_start"])
    s1 = grid["case_id"].map(span["subject_end"])
    last = grid.groupby("case_id")["token_index"].transform("max")
    t = grid["token_index"]
    group = np.select(
        [t == last, t == s1 - 1, t == s0, (t > s0) & (t < s1 - 1), t == s1, t > s1],
        ["last token", "last subject token", "first subject token", "middle subject tokens",
         "first subsequent token", "further tokens"],
        default="",  # tokens before the subject: no group, as in ROME
    )
    return pd.Series(group, index=grid.index)


def average_effects(grid: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """Mean indirect effect per (kind, window, token group, layer) over traced facts
    (``status == "ok"``), and the number of facts in each group: ``p_restored - p_noised``
    for the paper's kinds; in general the absolute effect of :mod:`locedit.tracing.tables`
    (``r - m*`` denoising, ``m - r`` noising, in the kind's metric)."""
    ok = facts[facts["status"] == "ok"]
    g = with_endpoints(grid[(grid["kind"] != "zero") & grid["case_id"].isin(ok["case_id"])], facts).copy()
    g["group"] = token_groups(g, ok)
    g = g[g["group"] != ""]
    noising = g["kind"].map(lambda k: _spec(k).direction == "noise").to_numpy(dtype=bool)
    g["effect"] = np.where(noising, g["score_clean"] - g["p_restored"], g["p_restored"] - g["score_corrupt"])
    # one value per (fact, group, layer) first (middle/further groups hold several tokens)
    per_fact = g.groupby(["kind", "window", "group", "layer", "case_id"])["effect"].mean()
    out = per_fact.groupby(["kind", "window", "group", "layer"]).agg(["mean", "count"])
    return out.rename(columns={"mean": "effect", "count": "n_facts"}).reset_index()


def plot_trace_average(grid: pd.DataFrame, facts: pd.DataFrame):
    """ROME Fig. 1 averaged over facts: mean indirect effect by token group (rows) and layer
    (1-indexed columns), one panel per tracing run, one colour scale per kind."""
    avg = average_effects(grid, facts)
    runs = list(avg[["kind", "window"]].drop_duplicates().sort_values(["kind", "window"])
                .itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(6.5 * max(1, len(runs)), 3.2),
                             squeeze=False)
    for ax, (kind, window) in zip(axes[0], runs):
        cells = avg[(avg["kind"] == kind) & (avg["window"] == window)]
        mat = cells.pivot(index="group", columns="layer", values="effect")
        mat = mat.reindex([g for g in TOKEN_GROUPS if g in mat.index])
        n = int(cells["n_facts"].max())
        sns.heatmap(mat.to_numpy(), ax=ax, cmap=KIND_CMAPS.get(kind, "Greens"), vmin=0,
                    cbar_kws={"label": "mean indirect effect", "format": "%.2g"},
                    xticklabels=[str(c + 1) for c in mat.columns], yticklabels=list(mat.index))
        ax.set_xlabel(f"Center of {window} restored layers" if window > 1 else "Layer")
        ax.set_ylabel("")
        ax.set_title(f"Average indirect effect, {KIND_TITLES.get(kind, kind)} (window {window}; "
                     f"n={n} facts)", fontsize=9)
    if not runs:
        axes[0][0].text(0.5, 0.5, "no traced facts", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig
