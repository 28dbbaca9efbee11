"""Figs 6 and 12: R² of Layer-only vs Layer x Trace regressions, per problem and method."""

import pandas as pd

from locedit.analysis import plots
from locedit.figures import save_figure
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    main_reg = pd.read_csv(snakemake.input.main)
    windows = pd.read_csv(snakemake.input.windows)
    out = snakemake.output
    figs = {
        "fig06_r2_layer_vs_trace": lambda: plots.r2_bars(main_reg, "rewrite"),
        "fig06b_r2_overall": lambda: plots.r2_bars(main_reg, "overall"),
        "fig12_r2_by_window": lambda: plots.r2_bars(
            windows, "rewrite", row="window", title="R² by tracing window"
        ),
    }
    for stem, make in figs.items():
        save_figure(make(), out[f"{stem}_png"], out[f"{stem}_pdf"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
