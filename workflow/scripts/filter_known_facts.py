"""Rule filter_known_facts: score every record with the pre-edit model (paper App. A).

Input ``records``; output ``facts`` (parquet, one row per record, see locedit.data.filtering).
"""

import logging

import torch

from locedit.data.filtering import filter_known_facts
from locedit.io import read_json, write_parquet
from locedit.modeling import load_model, seed_everything
from locedit.workflow import fail, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    seed_everything(snakemake.params.seed)  # greedy decoding draws nothing; for any sampler
    f = snakemake.params.filter
    model, tok = load_model(**snakemake.params.model)
    records = read_json(snakemake.input.records)
    facts = filter_known_facts(
        model,
        tok,
        records,
        max_new_tokens=f["max_new_tokens"],
        erasure_min_prob=f["erasure_min_prob"],
        batch_size=f["batch_size"],
    )
    logger.info(
        "%d facts: %d known (%.1f%%), %d erasure-eligible",
        len(facts),
        int(facts["is_correct"].sum()),
        100 * facts["is_correct"].mean() if len(facts) else 0.0,
        int(facts["erasure_eligible"].sum()),
    )
    n_known, need = int(facts["is_correct"].sum()), f["min_known"]
    if snakemake.params.only_known and n_known < need:
        fail(
            f"the model knows {n_known} of {len(facts)} facts (greedy continuation contains "
            f"target_true); the study uses known facts only and needs at least {need} "
            "(filter.min_known). Is model.source the model the dataset was made for? (A toy "
            "model needs its default training; tracing/editing.only_correct: false studies "
            "every fact.)"
        )
    write_parquet(facts, snakemake.output.facts)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
