"""Rule collect_tuning: every tuning candidate's scores in one table, and a markdown summary of
the chosen values per (variant, method)."""

import pandas as pd

from locedit.analysis.tables import to_markdown
from locedit.io import write_parquet, write_text
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake)
    table = pd.concat([pd.read_parquet(p) for p in snakemake.input.candidates], ignore_index=True)
    write_parquet(table, snakemake.output.table)
    shown = table.assign(chosen=table["chosen_by"].where(table["chosen"], ""))
    cols = ["variant", "method", "layer", "values", "n_edits", "rewrite_score", "paraphrase_score",
            "neighborhood_score", "essence_score", "chosen"]  # fmt: skip
    note = f"Selection rule (editing.tuning.selection): {dict(snakemake.params.selection)}."
    write_text(to_markdown(shown[cols].round(3), "Tuning candidates (App. A)", note), snakemake.output.summary)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
