"""Every figure function draws from tables, writes PNG + PDF and closes its figure."""

import matplotlib.pyplot as plt
from matplotlib.collections import PathCollection
import pandas as pd
import pytest

from locedit.analysis import plots
from locedit.figures import save_figure
from locedit.analysis.join import build_edit_vs_trace, known_tracing
from locedit.analysis.regression import layer_correlations
from locedit.analysis.robust import RobustSettings
from locedit.analysis.study import CORR_FEATURES, run_study
from tests.analysis_synth import make_tables


@pytest.fixture(scope="module")
def data():
    facts, tracing, edits = make_tables(
        n_cases=10, n_model_layers=4, edit_layers=(0, 1, 3), windows=(1, 5), seed=1
    )
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    frames = run_study(df, 5, ["rewrite", "overall"], ["rewrite"], 5, RobustSettings(replicates=0, permutations=0))
    return df, frames, known_tracing(tracing, facts)


def _figures(df, frames, curves):
    corr = frames["layer_correlations"]
    return {
        "fig04": plots.rewrite_vs_trace(df, 1),
        "fig14": plots.rewrite_vs_trace(
            df, 1, metric="efficacy_magnitude", feature="trace_effect_abs_last", perfect_line=False
        ),
        "fig06": plots.r2_bars(frames["main"], "rewrite"),
        "fig12": plots.r2_bars(frames["windows"], "rewrite", row="window"),
        "fig07": plots.scores_by_layer(df, ["rewrite", "paraphrase", "neighborhood"], "t"),
        "fig09": plots.scores_by_layer(df, ["overall", "overall_essence"], "t"),
        "fig10": plots.tracing_by_window(curves, "t"),
        "fig11": plots.peaks_by_window(curves, "t"),
        "fig15": plots.scatter_by_layer(
            df, corr, "error_injection", "rome", "rewrite", "trace_effect", "t"
        ),
        "fig21": plots.scatter_by_layer(
            df, corr, "error_injection", "rome", "rewrite", "zero_effect", "t"
        ),
    }


def test_every_figure_is_saved_as_png_and_pdf_and_closed(data, tmp_path):
    plt.close("all")
    for name, fig in _figures(*data).items():
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        save_figure(fig, png, pdf)
        assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert plt.get_fignums() == []


def test_facets_and_axes_label_layers_one_indexed(data):
    df, frames, curves = data
    fig = plots.scatter_by_layer(
        df, frames["layer_correlations"], "error_injection", "rome", "rewrite", "trace_effect", "t"
    )
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert [t.split(":")[0] for t in titles] == ["Layer 1", "Layer 2", "Layer 4"]
    fig4 = plots.rewrite_vs_trace(df, 3)
    assert "layer 4" in fig4.axes[0].get_title()
    plt.close("all")


def test_missing_data_gives_a_labelled_empty_figure(data, tmp_path):
    df, frames, _ = data
    no_zero = df.drop(columns=["zero_effect"])
    figs = [
        plots.scatter_by_layer(
            no_zero,
            frames["layer_correlations"],
            "error_injection",
            "rome",
            "rewrite",
            "zero_effect",
            "t",
        ),
        plots.rewrite_vs_trace(df, 2),  # layer 3 (0-indexed 2) was not edited
        plots.r2_bars(frames["main"].iloc[0:0], "rewrite"),
        plots.tracing_by_window(
            pd.DataFrame(columns=["case_id", "window", "layer", "effect_frac_max"]), "t"
        ),
    ]
    for i, fig in enumerate(figs):
        save_figure(fig, tmp_path / f"{i}.png", tmp_path / f"{i}.pdf")
    assert plt.get_fignums() == []


def test_default_layer_resolution():
    assert plots.resolve_default_layer([0, 4, 8, 12, 4], None) == 4
    assert plots.resolve_default_layer([5, 0, 9], 5) == 5
    with pytest.raises(ValueError, match="analysis.default_layer=7"):
        plots.resolve_default_layer([0, 5], 7)


def test_layer_correlations_cover_features_and_layers(data):
    df, _, _ = data
    corr = layer_correlations(df, CORR_FEATURES, ["rewrite"])
    rome = corr[(corr.method == "rome") & (corr.variant == "error_injection")]
    assert sorted(rome.layer.unique()) == [0, 1, 3]
    assert set(rome.feature) == set(CORR_FEATURES)


def test_a_run_with_no_known_facts_still_draws_and_tabulates(tmp_path):
    from locedit.analysis.tables import build_tables, render

    facts, tracing, edits = make_tables(n_cases=6, n_model_layers=4, edit_layers=(0, 1, 3), seed=4)
    facts = facts.assign(is_correct=False)
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    assert df.empty
    frames = run_study(df, 5, ["rewrite", "overall"], ["rewrite"], 5, RobustSettings(replicates=5, permutations=5))
    layer = plots.resolve_default_layer(df["layer"], None)
    assert layer is None
    meta = dict(model_name="t", model_source="t", dataset_name="d", dataset_format="counterfact")
    for name, sections in build_tables(frames, meta, 0.05, layer).items():
        render(sections, name)
    figs = [
        plots.rewrite_vs_trace(df, layer),
        plots.scatter_by_layer(
            df,
            frames["layer_correlations"],
            "error_injection",
            "rome",
            "rewrite",
            "trace_effect",
            "t",
        ),
        plots.r2_bars(frames["main"], "rewrite"),
        plots.r2_bars(frames["windows"], "rewrite", row="window"),
        plots.scores_by_layer(df, ["rewrite"], "t"),
        plots.tracing_by_window(known_tracing(tracing, facts), "t"),
        plots.peaks_by_window(known_tracing(tracing, facts), "t"),
    ]
    for i, fig in enumerate(figs):
        save_figure(fig, tmp_path / f"{i}.png", tmp_path / f"{i}.pdf")
    assert plt.get_fignums() == []


def _plotted_x(ax) -> set[float]:
    """x of the data drawn in ``ax``: lines of more than two points (not axhline/axvline),
    scatter offsets and bar centres."""
    xs = set()
    for line in ax.get_lines():
        if len(line.get_xdata()) > 2:
            xs |= {float(x) for x in line.get_xdata()}
    for coll in ax.collections:
        if isinstance(coll, PathCollection):  # scatter points (error bands have no data x)
            xs |= {float(x) for x, _ in coll.get_offsets()}
    for patch in ax.patches:
        if patch.get_height():
            xs.add(round(patch.get_x() + patch.get_width() / 2, 6))
    return xs


def test_figures_show_one_indexed_layers_and_their_panels(data):
    """Model layers 0..3 and edit layers 0, 1, 3 (0-indexed) are drawn at 1..4 and 1, 2, 4."""
    figs = _figures(*data)
    visible = {name: [a for a in fig.axes if a.get_visible()] for name, fig in figs.items()}
    for name in ("fig10", "fig11"):  # tracing curves and peak histograms: x = layer
        for ax in visible[name]:
            xs = _plotted_x(ax)
            assert xs and xs <= {1.0, 2.0, 3.0, 4.0}, (name, sorted(xs))
        assert [ax.get_title() for ax in visible[name]] == ["Window = 1", "Window = 5"]
    edit_layers = {1.0, 2.0, 4.0}
    for ax in visible["fig07"]:  # scores by edit layer
        assert _plotted_x(ax) <= edit_layers, sorted(_plotted_x(ax))
    assert set().union(*(_plotted_x(ax) for ax in visible["fig07"])) == edit_layers
    # one panel per (problem, metric) and per problem; one scatter per edit layer
    assert len(visible["fig07"]) == 5 * 3 and len(visible["fig09"]) == 5 * 2
    assert [ax.get_title() for ax in visible["fig06"]] == [
        "Error Injection", "Tracing Reversal", "Fact Erasure", "Fact Amplification", "Fact Forcing"]
    assert [t.get_text() for t in visible["fig06"][0].get_xticklabels()] == ["FT-1", "FT-5", "ROME", "MEMIT"]
    assert len(visible["fig15"]) == 3
    plt.close("all")


def test_layer_axes_tick_whole_layers_only(data):
    """Every layer axis ticks whole, 1-indexed layers: Fig. 7's exactly the edited ones; Figs 10
    and 11 no fractional ticks; Fig. 15's panels give ρ with p and n, and a legend."""
    figs = _figures(*data)
    for ax in (a for a in figs["fig07"].axes if a.get_visible()):
        assert list(ax.get_xticks()) == [1, 2, 4]
    for name in ("fig10", "fig11"):
        for ax in (a for a in figs[name].axes if a.get_visible()):
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
    assert figs["fig10"].axes[0].get_ylabel() == "Tracing Effect"
    titles = [ax.get_title() for ax in figs["fig15"].axes if ax.get_title()]
    assert titles and all("p = " in t and "n = " in t for t in titles), titles
    assert figs["fig15"].legends and "y = x" in [t.get_text() for t in figs["fig15"].legends[0].get_texts()]
    plt.close("all")


def test_trace_heatmaps_share_one_scale_per_fact_and_label_estimates():
    """A fact's exact restoration panels share one colour scale; attribution patching's panel is
    labelled an estimate."""
    from locedit.tracing.plots import plot_trace_heatmaps

    rows = []
    for kind, window, scale in (("mlp", 1, 1.0), ("mlp", 5, 0.5), ("atp", 5, 3.0)):
        for t in range(3):
            for layer in range(4):
                rows.append({"case_id": 7, "kind": kind, "window": window, "token_index": t,
                             "token": f"t{t}", "is_subject": t == 1, "layer": layer,
                             "p_restored": scale * (t + layer) / 6})
    facts = pd.DataFrame({"case_id": [7], "target": ["Paris"], "p_clean": [0.9], "p_noised": [0.1]})
    fig = plot_trace_heatmaps(pd.DataFrame(rows), facts, [7])
    heat = {ax.get_title().split("\n")[0]: ax.collections[0].get_clim() for ax in fig.axes if ax.get_title()}
    exact = 5 / 6  # the largest restored p of the exact runs (window 1)
    assert heat == {"MLP tracing (window 1)": (0.0, exact), "MLP tracing (window 5)": (0.0, exact),
                    "MLP, attribution patching tracing (window 5)": (0.0, 2.5)}
    labels = {ax.get_ylabel() for ax in fig.axes if not ax.get_title()}  # the colour bars
    assert labels == {"AtP estimate of p(Paris)", "p(Paris)"}
    plt.close("all")
