"""Figs 7-9: edit scores by central edit layer, per method and problem."""

import pandas as pd

from locedit.analysis import plots
from locedit.figures import save_figure
from locedit.workflow import setup_logging

FIGURES = {
    "fig07_scores_by_layer": (
        ["rewrite", "paraphrase", "neighborhood"],
        "Edit success by edit layer",
    ),
    "fig08_essence_by_layer": (["essence"], "Essence score by edit layer"),
    "fig09_overall_by_layer": (
        ["overall", "overall_essence"],
        "Overall edit success by edit layer",
    ),
}


def main(snakemake) -> None:
    setup_logging(snakemake)
    df = pd.read_parquet(snakemake.input.table)
    for stem, (metrics, title) in FIGURES.items():
        fig = plots.scores_by_layer(df, metrics, title)
        save_figure(fig, snakemake.output[f"{stem}_png"], snakemake.output[f"{stem}_pdf"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
