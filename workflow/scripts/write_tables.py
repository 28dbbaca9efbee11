"""Markdown, LaTeX and HTML (for the report) tables: the paper's Tables 1-8, robust inference,
the paper comparison."""

import pandas as pd

from locedit.analysis.plots import resolve_default_layer
from locedit.analysis.tables import build_tables, render, to_html
from locedit.io import write_text
from locedit.workflow import setup_logging

FRAMES = ["main", "layer_correlations", "concentrated", "windows", "features"]


def _read(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # e.g. no alternative features were traced
        return pd.DataFrame()


def main(snakemake) -> None:
    setup_logging(snakemake)
    frames = {name: _read(snakemake.input[name]) for name in FRAMES}
    table = pd.read_parquet(snakemake.input.table)
    layer = resolve_default_layer(table["layer"], snakemake.params.default_layer)
    counts = {"known facts analysed": table["case_id"].nunique(), "edits analysed": len(table)}
    tracing = pd.read_parquet(snakemake.input.tracing)
    tables = build_tables(
        frames, dict(snakemake.params.meta), snakemake.params.alpha, layer, counts, edits=table,
        tracing=tracing[tracing["case_id"].isin(table["case_id"])],  # the analysed (known) facts
    )
    for name, sections in tables.items():
        md, tex = render(sections, name)
        write_text(md, snakemake.output[f"{name}_md"])
        write_text(tex, snakemake.output[f"{name}_tex"])
        write_text(to_html(sections), snakemake.output[f"{name}_html"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
