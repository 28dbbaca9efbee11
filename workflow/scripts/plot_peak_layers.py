"""Histogram of the layer where each fact's tracing effect peaks (paper Fig. 1)."""

import pandas as pd

from locedit.figures import save_figure
from locedit.tracing.plots import plot_peak_layers
from locedit.tracing.tables import peak_layers
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    effects = pd.read_parquet(snakemake.input.effects)
    n_layers = int(effects["layer"].max()) + 1 if len(effects) else 1
    peaks = peak_layers(effects, p.kind, int(p.window))
    fig = plot_peak_layers(peaks, n_layers, p.edit_layers, p.kind, int(p.window))
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
