"""Rule sample_essence_texts: essence texts of every fact of one datapoint shard (App. B).

Inputs ``records``, ``facts``; output ``essence`` (JSON ``{case_id: {"texts": [...], "ppl":
mean clean pre-edit perplexity}}``), sampled once from the pre-edit model and shared by every
variant, method and layer (locedit.editing.inputs.sample_essence).
"""

import logging

import torch

from locedit.editing.inputs import load_shard, sample_essence
from locedit.io import write_json
from locedit.modeling import load_model
from locedit.workflow import log_stream, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    records, facts = load_shard(snakemake.input.records, snakemake.input.facts, p.shard)
    out = {}
    if records:
        model, tok = load_model(**p.model)
        with log_stream(snakemake) as progress:
            out = sample_essence(
                model,
                tok,
                records,
                facts,
                essence=p.essence,
                seed=p.seed,
                only_correct=p.only_correct,
                progress=progress,
            )
    logger.info("essence texts for %d fact(s)", len(out))
    write_json({str(k): v for k, v in out.items()}, snakemake.output.essence)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
