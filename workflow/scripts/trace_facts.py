"""Causal Tracing / representation zeroing of one shard of datapoints (one model load).

Finished facts are checkpointed in ``params.cache`` (stamped with a fingerprint of the job's
settings, code and inputs), so a killed job resumes where it stopped; the shard tables are
written atomically at the end.
"""

import sys

import pandas as pd
import torch
from tqdm import tqdm

from locedit.io import read_json, write_parquet
from locedit.modeling import load_model
from locedit.data.records import flat_fact
from locedit.tracing.tables import trace_dataset
from locedit.workflow import job_fingerprint, log_stream, setup_logging

#: Params a traced fact depends on (its checkpoint fingerprint); not the shard bounds or filter.
FINGERPRINT_PARAMS = ("model", "runs", "samples", "seed", "row_budget", "o_noise_max_tokens", "code")


def main(snakemake) -> None:
    log = setup_logging(snakemake)
    p = snakemake.params
    start, stop = p.positions
    pool = [flat_fact(r) for r in read_json(snakemake.input.records)]  # STR partners come from all
    known = pd.read_parquet(snakemake.input.facts, columns=["case_id", "is_correct"])
    correct = set(known.loc[known["is_correct"].astype(bool), "case_id"].astype(int))
    facts = pool[start:stop]
    if p.only_correct:
        facts = [f for f in facts if f["case_id"] in correct]
    noise_std = float(read_json(snakemake.input.noise)["noise_std"])
    log.info(
        "shard records [%d, %d): %d facts to trace (only_correct=%s), sigma=%g, runs=%s",
        start,
        stop,
        len(facts),
        p.only_correct,
        noise_std,
        p.runs,
    )
    torch.set_num_threads(snakemake.threads)
    model, tok = load_model(**p.model)
    stream = log_stream(snakemake)
    try:
        grid, table = trace_dataset(
            model,
            tok,
            facts,
            p.runs,
            noise_std=noise_std,
            samples=p.samples,
            seed=p.seed,
            row_budget=p.row_budget,
            o_noise_max_tokens=p.o_noise_max_tokens,
            progress=tqdm(facts, file=stream, desc="trace", mininterval=5),
            cache_dir=p.cache,
            pool=pool,
            fingerprint=job_fingerprint(
                {k: getattr(p, k) for k in FINGERPRINT_PARAMS}, snakemake.input
            ),
        )
    finally:
        if stream is not sys.stderr:
            stream.close()
    write_parquet(grid, snakemake.output.grid)
    write_parquet(table, snakemake.output.facts)
    log.info("traced %d facts (%s)", len(table), table["status"].value_counts().to_dict())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
