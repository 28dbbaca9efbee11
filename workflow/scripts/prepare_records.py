"""Rule prepare_records: load the dataset, convert it to CounterFact records, keep the first
``dataset.limit`` and validate them (with the model's tokenizer) before any model job runs.

Input ``raw``; output ``records`` (JSON list). Fails with every bad ``case_id`` named.
"""

import logging

from locedit.io import write_json
from locedit.modeling import load_tokenizer
from locedit.records import load_records, validate_records
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    records = load_records(snakemake.input.raw, p.fmt, seed=p.seed)
    records = records[: p.limit]
    logger.info("loaded %d records (%s) from %s", len(records), p.fmt, snakemake.input.raw)
    validate_records(records, load_tokenizer(p.tokenizer))
    write_json(records, snakemake.output.records)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
