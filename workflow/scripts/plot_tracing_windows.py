"""Figs 10-11: tracing effects and peak layers by tracing window (known facts)."""

import pandas as pd

from locedit.analysis import plots
from locedit.figures import save_figure
from locedit.analysis.join import known_tracing
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    curves = known_tracing(
        pd.read_parquet(snakemake.input.tracing),
        pd.read_parquet(snakemake.input.facts),
        snakemake.params.kind,
    )
    out = snakemake.output
    fig = plots.tracing_by_window(
        curves, "Tracing effects grow with the number of restored layers (window)"
    )
    save_figure(fig, out.fig10_tracing_by_window_png, out.fig10_tracing_by_window_pdf)
    fig = plots.peaks_by_window(curves, "Where tracing peaks, by window size")
    save_figure(fig, out.fig11_peaks_by_window_png, out.fig11_peaks_by_window_pdf)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
