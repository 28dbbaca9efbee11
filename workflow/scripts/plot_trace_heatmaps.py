"""Tracing heatmaps of the first few traced facts (paper Fig. 2)."""

import pandas as pd

from locedit.plots_tracing import plot_trace_heatmaps, save_figure
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    grid = pd.read_parquet(snakemake.input.grid)
    facts = pd.read_parquet(snakemake.input.facts)
    ok = facts[facts["status"] == "ok"].sort_values("case_id")
    case_ids = ok["case_id"].head(snakemake.params.n_facts).tolist()
    fig = plot_trace_heatmaps(grid, facts, case_ids)
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
