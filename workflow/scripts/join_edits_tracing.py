"""Join every edit of a known fact with the tracing effects at its central layer."""

import pandas as pd

from locedit.analysis.join import build_edit_vs_trace
from locedit.io import write_parquet
from locedit.workflow import setup_logging


def main(snakemake) -> None:
    log = setup_logging(snakemake)
    conc = snakemake.params.concentrated
    table = build_edit_vs_trace(
        pd.read_parquet(snakemake.input.edits),
        pd.read_parquet(snakemake.input.tracing),
        pd.read_parquet(snakemake.input.facts),
        window=snakemake.params.window,
        kind=snakemake.params.kind,
        rel_threshold=conc["rel_threshold"],
        max_other_layers=conc["max_other_layers"],
        erasure_eligible_only=snakemake.params.erasure_eligible_only,
    )
    log.info("edit_vs_trace: %d rows, %d facts", len(table), table["case_id"].nunique())
    write_parquet(table, snakemake.output.table)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
