"""Figs 4, 14-18, 21-22: edit scores against tracing / zeroing effects, overall and per layer."""

import pandas as pd

from locedit.analysis import plots
from locedit.figures import save_figure
from locedit.registry.analysis import FIGURES
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    log = setup_logging(snakemake)
    df = pd.read_parquet(snakemake.input.table)
    corr = pd.read_csv(snakemake.input.layer_correlations)
    layer = plots.resolve_default_layer(df["layer"], snakemake.params.default_layer)
    log.info("default layer (0-indexed): %s", layer)

    def by_layer(stem: str, metric: str, feature: str, title: str):
        variant, method = FIGURES[stem].cell  # the cell the figure shows: the registry's
        return lambda: plots.scatter_by_layer(df, corr, variant, method, metric, feature, title)

    figs = {
        "fig04_rewrite_vs_trace": lambda: plots.rewrite_vs_trace(df, layer),
        "fig14_unscaled": lambda: plots.rewrite_vs_trace(
            df,
            layer,
            metric="efficacy_magnitude",
            feature="trace_effect_abs_last",
            perfect_line=False,
        ),
        **{
            stem: by_layer(stem, *spec)
            for stem, spec in {
                "fig15_rome_rewrite_by_layer": (
                    "rewrite", "trace_effect", "ROME rewrite score by tracing effect (Error Injection)"
                ),
                "fig16_rome_last_token_by_layer": (
                    "rewrite", "trace_effect_last",
                    "ROME rewrite score by last-subject-token tracing effect",
                ),
                "fig17_ff_ft5_by_layer": (
                    "rewrite", "trace_effect", "Fact Forcing (FT-5) rewrite score by tracing effect"
                ),
                "fig18_rome_overall_by_layer": (
                    "overall", "trace_effect", "ROME overall score by tracing effect (Error Injection)"
                ),
                "fig21_zeroing_rewrite_by_layer": (
                    "rewrite", "zero_effect", "ROME rewrite score by zeroing effect"
                ),
                "fig22_zeroing_overall_by_layer": (
                    "overall", "zero_effect", "ROME overall score by zeroing effect"
                ),
            }.items()
        },
    }
    for stem, make in figs.items():
        save_figure(make(), snakemake.output[f"{stem}_png"], snakemake.output[f"{stem}_pdf"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
