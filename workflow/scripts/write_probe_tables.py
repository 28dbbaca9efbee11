"""Rule write_probe_tables: the generalisation probes' table (markdown, LaTeX, HTML), per problem
× method × edit layer, with the regressions that take each probe as the outcome."""

import pandas as pd

from locedit.analysis.probes import probe_sections
from locedit.analysis.tables import render, to_html
from locedit.io import write_text
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    sections = probe_sections(
        pd.read_parquet(snakemake.input.table), pd.read_csv(snakemake.input.main)
    )
    md, tex = render(sections, "generalisation_probes")
    write_text(md, snakemake.output.md)
    write_text(tex, snakemake.output.tex)
    write_text(to_html(sections), snakemake.output.html)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
