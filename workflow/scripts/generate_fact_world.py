"""Rule generate_fact_world: write the built-in fact world (see :mod:`locedit.data.world`).

Params ``world`` (the config section) and ``seed``; outputs ``records`` (CounterFact-format JSON
list, case_id 0..N-1) and ``corpus`` (training text, one document per line).
"""

import logging
from collections import Counter

from locedit.io import write_json, write_text
from locedit.workflow import setup_logging
from locedit.data.world import generate_world

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    records, docs = generate_world(dict(p.world), int(p.seed))
    relations = Counter(r["requested_rewrite"]["relation_id"] for r in records)
    logger.info(
        "fact world: %d records over %d subjects, relations %s; corpus %d documents",
        len(records),
        len({r["requested_rewrite"]["subject"] for r in records}),
        dict(relations),
        len(docs),
    )
    write_json(records, snakemake.output.records)
    write_text("\n".join(docs) + "\n", snakemake.output.corpus)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
