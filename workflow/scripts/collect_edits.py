"""Rule collect_edits: concatenate the edit shards into ``edits.parquet`` (one row per edit).

Columns: see locedit.editing.driver.EDIT_COLUMNS (case_id, variant, method, layer, the scores
with their pre/post probabilities, ROME's unscaled metrics, target, timings), then
``essence_ppl_ratio`` and the ``collapsed`` flag (``editing.collapse``).
"""

import logging

from locedit.editing.driver import collect_shards
from locedit.editing.metrics import flag_collapse
from locedit.io import write_parquet
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    edits = flag_collapse(collect_shards(list(snakemake.input.shards)), **snakemake.params.collapse)
    logger.info("%d edits from %d shard(s); %d flagged collapsed", len(edits),
                len(snakemake.input.shards), int(edits["collapsed"].sum()))
    write_parquet(edits, snakemake.output.edits)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
