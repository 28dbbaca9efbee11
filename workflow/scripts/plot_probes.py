"""Rule plot_probes: every generalisation probe by edit layer, per method and problem."""

import pandas as pd

from locedit.analysis import plots
from locedit.analysis.probes import probed
from locedit.editing.probes import PROBE_METRICS
from locedit.figures import save_figure
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    df = probed(pd.read_parquet(snakemake.input.table))
    fig = plots.scores_by_layer(
        df, ["rewrite", *PROBE_METRICS], "Generalisation probes by edit layer"
    )
    save_figure(
        fig, snakemake.output.generalisation_probes_png, snakemake.output.generalisation_probes_pdf
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
