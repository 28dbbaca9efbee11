"""Tracing heatmaps of the first few traced facts (paper Fig. 2), and the picture averaged over
every traced fact by ROME's token groups (ROME Fig. 1) with its numbers as a table."""

import pandas as pd

from locedit.figures import save_figure
from locedit.io import write_parquet
from locedit.tracing.plots import average_effects, plot_trace_average, plot_trace_heatmaps
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    grid = pd.read_parquet(snakemake.input.grid)
    facts = pd.read_parquet(snakemake.input.facts)
    ok = facts[facts["status"] == "ok"].sort_values("case_id")
    case_ids = ok["case_id"].head(snakemake.params.n_facts).tolist()
    fig = plot_trace_heatmaps(grid, facts, case_ids)
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)
    write_parquet(average_effects(grid, facts), snakemake.output.average_table)
    save_figure(plot_trace_average(grid, facts), snakemake.output.average, snakemake.output.average_pdf)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
