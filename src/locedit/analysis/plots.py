"""seaborn figures of the paper (Figs 4, 6-12, 14-18, 21-22) drawn from the run's tables.

Every function takes data frames (never a model) and returns a matplotlib Figure;
:func:`locedit.figures.save_figure` writes PNG and PDF atomically and closes it. Layers are
0-indexed in the tables and labelled 1-indexed on every axis and facet, as in the paper.
"""

from __future__ import annotations

import locedit.figures  # noqa: F401  (first: the Agg backend and the one style)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from locedit.analysis import METHOD_LABELS, METHODS, METRICS, VARIANT_LABELS, VARIANTS
from locedit.editing.probes import PROBE_LABELS
from locedit.editing.metrics import GEN_LABELS
from locedit.analysis.regression import pearson
from locedit.registry.analysis import HEADLINE

LAYER_BLUE, DIFF_ORANGE = "#4C72B0", "#DD8452"
METRIC_LABELS = {
    "rewrite": "Rewrite Score",
    "paraphrase": "Paraphrase Score",
    "neighborhood": "Neighborhood Score",
    "essence": "Essence Score",
    "overall": "Overall Score",
    "overall_essence": "Overall + Essence",
    "efficacy_magnitude": "Rewrite magnitude p*(new) − p*(true)",
    **PROBE_LABELS,
    **GEN_LABELS,
}
FEATURE_LABELS = {
    "trace_effect": "Tracing Effect (fraction restored, max over tokens)",
    "trace_effect_last": "Tracing Effect (last subject token)",
    "trace_effect_abs_last": "Absolute Tracing Effect (last subject token)",
    "zero_effect": "Zeroing Effect (fraction, max over tokens)",
    "atp_effect": "AtP Effect (first-order estimate, max over tokens)",
}



def _empty(title: str, why: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.set_axis_off()
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    ax.set_title(title)
    return fig


def resolve_default_layer(layers, configured: int | None) -> int | None:
    """The 0-indexed layer of Fig. 4 / 14: ``configured`` if edited, else the median edited layer.

    Returns None when nothing was edited (e.g. the model knows none of the facts).

    Raises:
        ValueError: ``analysis.default_layer`` names a layer that was not edited.
    """
    layers = sorted(int(v) for v in pd.unique(pd.Series(layers)))
    if not layers:
        return None
    if configured is None:
        return layers[(len(layers) - 1) // 2]
    if int(configured) not in layers:
        raise ValueError(
            f"analysis.default_layer={configured} (0-indexed) was not edited; "
            f"edited layers: {layers}"
        )
    return int(configured)


def _cell(df: pd.DataFrame, variant: str, method: str) -> pd.DataFrame:
    return df[(df["variant"] == variant) & (df["method"] == method)]


def rewrite_vs_trace(
    df: pd.DataFrame,
    layer: int | None,
    variant: str = HEADLINE[0],
    method: str = HEADLINE[1],
    metric: str = "rewrite",
    feature: str = "trace_effect",
    perfect_line: bool = True,
) -> plt.Figure:
    """Fig. 4 (and 14): one edit layer's scores against tracing, OLS fit, ρ in the title."""
    name = f"{METHOD_LABELS.get(method, method)}, {VARIANT_LABELS.get(variant, variant)}"
    if layer is None:
        return _empty(name, "no edits of known facts")
    title = f"{name}, layer {layer + 1}"
    col = METRICS.get(metric, metric)
    if col not in df.columns or feature not in df.columns:
        return _empty(title, f"the analysis table has no {col} / {feature} column")
    d = _cell(df, variant, method)
    d = d[d["layer"] == layer][[feature, col]].astype(float).dropna()
    if len(d) < 3:
        return _empty(
            title, f"too few points ({len(d)}) for {method} / {variant} at layer {layer + 1}"
        )
    fig, ax = plt.subplots(figsize=(4.5, 4))
    sns.regplot(
        data=d,
        x=feature,
        y=col,
        ax=ax,
        scatter_kws={"alpha": 0.3, "s": 12},
        line_kws={"color": DIFF_ORANGE},
        n_boot=200,
        seed=0,
    )
    if perfect_line:
        ax.plot([0, 1], [0, 1], "r--", lw=1, label="hypothetical perfect relationship")
        ax.legend(loc="lower right", fontsize=7)
    c = pearson(d[feature].to_numpy(), d[col].to_numpy())
    p = "p < 1e-4" if c["p_value"] < 1e-4 else f"p = {c['p_value']:.3g}"
    ax.set_title(f"{title}\nρ = {c['rho']:.3f} ({p}), n = {len(d)}")
    ax.set_xlabel(FEATURE_LABELS.get(feature, feature))
    ax.set_ylabel(METRIC_LABELS.get(metric, col))
    return fig


def scatter_by_layer(
    df: pd.DataFrame,
    corr: pd.DataFrame,
    variant: str,
    method: str,
    metric: str,
    feature: str,
    title: str,
    col_wrap: int = 4,
) -> plt.Figure:
    """Figs 15-18, 21-22: per-edit-layer scatter grids with an OLS fit, y = x, and ρ per facet."""
    col = METRICS[metric]
    if col not in df.columns or feature not in df.columns:
        return _empty(title, f"the analysis table has no {col} / {feature} column")
    d = _cell(df, variant, method)[["layer", feature, col]].dropna()
    if d.empty:
        return _empty(title, f"no {feature} data for {method} / {variant}")
    d = d.assign(Layer=[f"Layer {v + 1}" for v in d["layer"]]).sort_values("layer")
    order = list(dict.fromkeys(d["Layer"]))
    g = sns.FacetGrid(
        d,
        col="Layer",
        col_order=order,
        col_wrap=min(col_wrap, len(order)),
        height=2.2,
        sharex=True,
        sharey=True,
    )
    g.map_dataframe(
        sns.regplot,
        x=feature,
        y=col,
        scatter_kws={"alpha": 0.3, "s": 8},
        line_kws={"color": DIFF_ORANGE},
        n_boot=200,
        seed=0,
    )
    c = (
        corr[
            (corr["variant"] == variant)
            & (corr["method"] == method)
            & (corr["metric"] == metric)
            & (corr["feature"] == feature)
        ].set_index("layer")
        if len(corr)
        else pd.DataFrame()
    )
    for name, ax in g.axes_dict.items():
        ax.plot([0, 1], [0, 1], "r--", lw=0.8)
        layer = int(name.split()[-1]) - 1
        if layer in getattr(c, "index", []):
            row = c.loc[layer]
            ax.set_title(f"{name}: ρ = {row['rho']:.2f}\n(p = {row['p_value']:.2g}, n = {int(row['n'])})",
                         fontsize=8)
    g.set_axis_labels(FEATURE_LABELS.get(feature, feature).split(" (")[0], METRIC_LABELS[metric])
    handles = [
        plt.Line2D([], [], ls="", marker="o", alpha=0.5, ms=4, label="one fact's edit"),
        plt.Line2D([], [], color=DIFF_ORANGE, label="OLS fit (95% band)"),
        plt.Line2D([], [], color="r", ls="--", lw=0.8, label="y = x"),
    ]
    g.figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                    frameon=False, fontsize=8)
    g.figure.suptitle(title, y=1.1)  # above the two-line panel titles
    return g.figure


def r2_bars(
    reg: pd.DataFrame,
    metric: str = "rewrite",
    row: str | None = None,
    title: str = "R² of edit success explained by edit layer, and added by tracing",
) -> plt.Figure:
    """Figs 6 and 12: stacked bars of Layer R² and the extra R² of Layer x Trace, per problem."""
    r = reg[reg["metric"] == metric]
    variants = [v for v in VARIANTS if v in set(r["variant"])] or sorted(set(r["variant"]))
    rows = sorted(r[row].unique()) if row else [None]
    if r.empty:
        return _empty(title, f"no regressions for {metric}")
    fig, axes = plt.subplots(
        len(rows),
        len(variants),
        figsize=(2.6 * len(variants), 2.8 * len(rows)),
        sharey=True,
        squeeze=False,
    )
    for i, rv in enumerate(rows):
        for j, v in enumerate(variants):
            ax = axes[i][j]
            cell = r[(r["variant"] == v) & ((r[row] == rv) if row else True)]
            methods = [m for m in METHODS if m in set(cell["method"])]
            cell = cell.set_index("method").reindex(methods)
            x = np.arange(len(methods))
            lay = cell["r2_layer"].fillna(0).to_numpy()
            diff = cell["r2_diff"].fillna(0).clip(lower=0).to_numpy()
            ax.bar(x, lay, color=LAYER_BLUE, label="Layer")
            ax.bar(x, diff, bottom=lay, color=DIFF_ORANGE, label="+ Tracing (Layer x Trace)")
            for k, (a, b, p) in enumerate(zip(lay, diff, cell["f_pvalue"])):
                star = "*" if (isinstance(p, float) and p < 1e-4) else ""
                ax.text(k, a + b + 0.02, f"{a:.2f}\n+{b:.3f}{star}", ha="center", fontsize=6)
            ax.set_xticks(x, [METHOD_LABELS.get(m, m) for m in methods], fontsize=7)
            ax.set_ylim(0, 1.2)
            head = VARIANT_LABELS.get(v, v)
            ax.set_title(head if rv is None else f"{head}\n{row} = {rv}", fontsize=8)
            if j == 0:
                ax.set_ylabel("R²")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{title} ({METRIC_LABELS.get(metric, metric)}; * F-test p < 1e-4)", fontsize=9)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7)
    return fig


def scores_by_layer(df: pd.DataFrame, metrics: list[str], title: str) -> plt.Figure:
    """Figs 7-9: mean edit scores (± s.e. band) by central edit layer, one line per method;
    rows are problems, columns are metrics. Aggregated with pandas, drawn with matplotlib
    (seaborn's per-facet aggregation is ~10x slower here)."""
    cols = {"overall_essence": "overall_essence_score", **METRICS}
    metrics = [m for m in metrics if cols[m] in df.columns]
    variants = [v for v in VARIANTS if v in set(df["variant"])]
    methods = [m for m in METHODS if m in set(df["method"])]
    if df.empty or not metrics or not variants:
        return _empty(title, "no edits")
    agg = df.groupby(["variant", "method", "layer"])[[cols[m] for m in metrics]].agg(
        ["mean", "sem"]
    )
    palette = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    markers = dict(zip(methods, "osD^v<>"))
    edited = sorted(int(layer) + 1 for layer in df["layer"].unique())
    fig, axes = plt.subplots(
        len(variants),
        len(metrics),
        figsize=(3.2 * len(metrics), 2.3 * len(variants)),
        sharex=True,
        squeeze=False,
    )
    for i, v in enumerate(variants):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            for meth in methods:
                if (v, meth) not in agg.index.droplevel("layer"):
                    continue
                a = agg.loc[(v, meth)]
                x = a.index.to_numpy() + 1
                mean, se = a[(cols[m], "mean")].to_numpy(), a[(cols[m], "sem")].fillna(0).to_numpy()
                ax.plot(
                    x,
                    mean,
                    marker=markers[meth],
                    ms=3,
                    color=palette[meth],
                    label=METHOD_LABELS.get(meth, meth),
                )
                ax.fill_between(x, mean - se, mean + se, color=palette[meth], alpha=0.2, lw=0)
            # Over-reach is a signed difference of probabilities; every other score is in [0, 1].
            ax.set_ylim(-1.02 if m.startswith("overreach") else -0.02, 1.02)
            ax.set_title(f"{VARIANT_LABELS.get(v, v)} | {METRIC_LABELS[m]}", fontsize=8)
            ax.set_xticks(edited)  # the edited layers, 1-indexed: no ticks between them
            if i == len(variants) - 1:
                ax.set_xlabel("Edit layer")
            if j == 0:
                ax.set_ylabel("score")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(methods))
    return fig


def _integer_layer_ticks(axes) -> None:
    """Layer axes show whole layers only (matplotlib's default locator puts ticks at 1.5, 2.5)."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def tracing_by_window(curves: pd.DataFrame, title: str) -> plt.Figure:
    """Fig. 10: mean over facts of the per-layer (max over tokens) fractional effect, per window."""
    if curves.empty:
        return _empty(title, "no tracing rows")
    d = curves.assign(Layer=curves["layer"] + 1, Window=curves["window"])
    g = sns.relplot(
        data=d,
        x="Layer",
        y="effect_frac_max",
        col="Window",
        kind="line",
        marker="o",
        errorbar="se",
        height=2.4,
        aspect=1.1,
        col_wrap=min(4, d["Window"].nunique()),
    )
    g.set_axis_labels("Layer", "Tracing Effect")
    _integer_layer_ticks(g.axes.flat)
    g.figure.suptitle(title, y=1.03)
    return g.figure


def peaks_by_window(curves: pd.DataFrame, title: str) -> plt.Figure:
    """Fig. 11: distribution of each fact's peak layer (argmax of its curve), per window."""
    if curves.empty:
        return _empty(title, "no tracing rows")
    curves = curves.dropna(subset=["effect_frac_max"])
    if curves.empty:
        return _empty(title, "no finite tracing effects")
    idx = curves.groupby(["window", "case_id"])["effect_frac_max"].idxmax()
    peaks = curves.loc[idx.to_numpy(), ["window", "layer"]]
    peaks = peaks.assign(Layer=peaks["layer"] + 1, Window=peaks["window"])
    n_layers = int(curves["layer"].max()) + 1
    g = sns.displot(
        data=peaks,
        x="Layer",
        col="Window",
        discrete=True,
        height=2.4,
        aspect=1.1,
        col_wrap=min(4, peaks["Window"].nunique()),
    )
    g.set(xlim=(0.5, n_layers + 0.5))
    _integer_layer_ticks(g.axes.flat)
    g.set_axis_labels("Peak layer", "Count")
    g.figure.suptitle(title, y=1.03)
    return g.figure
