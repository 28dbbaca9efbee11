"""Rule collect_edits: concatenate the edit shards into ``edits.parquet`` (one row per edit).

Columns: see locedit.editing.driver.EDIT_COLUMNS (case_id, variant, method, layer, the scores
with their pre/post probabilities, ROME's unscaled metrics, target, timings).
"""

import logging

from locedit.editing.driver import collect_shards
from locedit.io import write_parquet
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    edits = collect_shards(list(snakemake.input.shards))
    logger.info("%d edits from %d shard(s)", len(edits), len(snakemake.input.shards))
    write_parquet(edits, snakemake.output.edits)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
