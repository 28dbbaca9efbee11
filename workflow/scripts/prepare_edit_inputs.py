"""Rule prepare_edit_inputs: method-independent inputs of one variant's edits of one shard.

Inputs ``records``, ``facts``, ``essence`` (sample_essence_texts), ``o_noise`` (tracing
reversal only), ``noise`` (fact forcing's σ, fact forcing only); output ``inputs`` (JSON: the
cases of every eligible fact with pre-edit probe probabilities, essence texts and their pre-edit
perplexity, plus the skipped facts and why; see locedit.editing.inputs).

Finished records are checkpointed in ``params.cache`` (stamped with a fingerprint of the job's
settings, code and inputs), so a killed job resumes where it stopped; the output is written
atomically at the end.
"""

import logging

import pandas as pd
import torch

from locedit.editing.inputs import load_shard, prepare_inputs
from locedit.editing.probes import other_subjects_index
from locedit.io import read_json, write_json
from locedit.modeling import load_model
from locedit.workflow import job_fingerprint, log_stream, setup_logging

logger = logging.getLogger(__name__)

#: Params a prepared record depends on (its checkpoint fingerprint); not the shard bounds. The
#: variant is in the cache path; o_noise and σ are inputs, so in the fingerprint.
FINGERPRINT_PARAMS = (
    "model",
    "essence",
    "only_correct",
    "erasure_only_eligible",
    "neighborhood_target",
    "batch_size",
    "seed",
    "probes",
    "code",
)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    records, facts = load_shard(snakemake.input.records, snakemake.input.facts, p.shard)
    o_noise, noise_std = {}, None
    if "o_noise" in snakemake.input.keys():
        table = pd.read_parquet(snakemake.input.o_noise)
        o_noise = dict(zip(table["case_id"].astype(int), table["o_noise"]))
    if "noise" in snakemake.input.keys():
        noise_std = float(read_json(snakemake.input.noise)["noise_std"])
    essence = {int(k): v for k, v in read_json(snakemake.input.essence).items()}
    # Over-reach probes ask about other subjects of the relation, anywhere in the dataset.
    others = other_subjects_index(read_json(snakemake.input.records)) if p.probes["enabled"] else {}
    out = {"cases": [], "skipped": []}
    if records:
        model, tok = load_model(**p.model)
        with log_stream(snakemake) as progress:
            out = prepare_inputs(
                model,
                tok,
                records,
                facts,
                variants=[snakemake.wildcards.variant],
                o_noise=o_noise,
                noise_std=noise_std,
                essence=p.essence,
                seed=p.seed,
                only_correct=p.only_correct,
                erasure_only_eligible=p.erasure_only_eligible,
                neighborhood_target=p.neighborhood_target,
                batch_size=p.batch_size,
                essence_texts=essence,
                progress=progress,
                cache_dir=p.cache,
                probes=p.probes,
                others=others,
                fingerprint=job_fingerprint(
                    {k: getattr(p, k) for k in FINGERPRINT_PARAMS}, snakemake.input
                ),
            )
    write_json(out, snakemake.output.inputs)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
