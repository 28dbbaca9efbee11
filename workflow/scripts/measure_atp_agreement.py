"""Agreement of attribution patching with exact Causal Tracing: per-fact table, summary, figure."""

import pandas as pd

from locedit.analysis.tables import to_markdown
from locedit.figures import save_figure
from locedit.io import write_parquet, write_text
from locedit.tracing.agreement import agreement, agreement_summary, plot_agreement
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    grid = pd.read_parquet(snakemake.input.grid)
    effects = pd.read_parquet(snakemake.input.effects)
    facts = pd.read_parquet(snakemake.input.facts)
    table = agreement(grid, effects, facts, snakemake.params.runs)
    write_parquet(table, snakemake.output.table)
    summary = agreement_summary(table)
    write_text(to_markdown(summary, "Attribution patching against exact Causal Tracing"),
               snakemake.output.summary)
    n_layers = int(effects["layer"].max()) + 1 if len(effects) else 1
    save_figure(plot_agreement(table, n_layers), snakemake.output.png, snakemake.output.pdf)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
