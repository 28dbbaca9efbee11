"""Rule prepare_records: publish the records ``validate_inputs`` checked as ``records.json``.

Runs only after validation passed, so a bad dataset never replaces (or deletes) a good run's
records; loads the dataset with the same function and checks the result is what was validated.
"""

import logging

from locedit.io import read_json, write_json
from locedit.data.records import load_records
from locedit.workflow import records_digest, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    records = load_records(snakemake.input.raw, p.fmt, seed=p.seed, limit=p.limit)
    report = read_json(snakemake.input.report)
    if records_digest(records) != report["sha256"]:
        raise RuntimeError(
            f"{snakemake.input.raw} changed after validation; rerun the workflow to validate it"
        )
    logger.info("publishing %d validated records from %s", len(records), snakemake.input.raw)
    write_json(records, snakemake.output.records)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
