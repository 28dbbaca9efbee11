"""Rule edit_facts: one (variant, method, central layer, shard) edit job.

Loads the model once, then for every eligible case of the shard applies the edit, evaluates it
and restores the weights bit-exactly (locedit.editing.driver). Finished cases are checkpointed
in ``params.cache`` (per-case JSON, stamped with a fingerprint of the job's settings and inputs,
so only a job cut off under the same settings reuses them) and a killed job resumes there; the
shard table ``edits`` is written atomically at the end.
"""

import logging

import pandas as pd
import torch

from locedit.editing.driver import NEEDS_STATS, run_edit_job
from locedit.io import read_json, write_parquet
from locedit.modeling import load_model
from locedit.workflow import job_fingerprint, log_stream, setup_logging

logger = logging.getLogger(__name__)


def load_stats(snakemake, model, method: str):
    """Covariance statistics and the method's context templates (ROME/MEMIT only)."""
    if method not in NEEDS_STATS:
        return None, []
    from locedit.editing.covariance import CovarianceStore

    stats = CovarianceStore.from_dir(snakemake.input.stats, model=model)
    templates = read_json(snakemake.input.templates)[method]
    return stats, templates


def fingerprint(snakemake) -> str:
    """Identity of the job's checkpoints: params that shape a row, code hash and inputs."""
    p = snakemake.params
    keys = ("model", "hparams", "engine", "aggregation", "essence", "batch_size", "code")
    settings = {k: getattr(p, k) for k in keys}
    return job_fingerprint(settings, snakemake.input)


def engine_options(engine: dict) -> dict | None:
    """The driver's engine options (None: the per-fact path)."""
    if not engine["batched"]:
        return None
    return {"row_budget": engine["row_budget"], "max_facts": engine["max_facts"]}


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p, w = snakemake.params, snakemake.wildcards
    method, variant, layer = w.method, w.variant, int(w.layer)
    cases = read_json(snakemake.input.inputs)["cases"]
    if any(c["variant"] != variant for c in cases):
        raise ValueError(f"{snakemake.input.inputs} holds cases of another variant than {variant}")
    logger.info("%s / %s / layer %d: %d case(s); hparams %s", variant, method, layer, len(cases), p.hparams)
    rows = pd.DataFrame()
    if cases:
        model, tok = load_model(**p.model)
        stats, templates = load_stats(snakemake, model, method)
        with log_stream(snakemake) as progress:
            rows = run_edit_job(
                model,
                tok,
                cases,
                method,
                layer,
                p.hparams,
                cache_dir=p.cache,
                fingerprint=fingerprint(snakemake),
                progress=progress,
                engine=engine_options(p.engine),
                stats=stats,
                context_templates=templates,
                aggregation=p.aggregation,
                essence_cap=p.essence["cap"],
                essence_max_tokens=p.essence["max_tokens"],
                batch_size=p.batch_size,
            )
        logger.info(
            "mean rewrite %.3f, paraphrase %.3f, neighborhood %.3f; %.3f s/edit",
            rows["rewrite_score"].mean(),
            rows["paraphrase_score"].mean(),
            rows["neighborhood_score"].mean(),
            (rows["edit_seconds"] + rows["eval_seconds"]).mean(),
        )
    write_parquet(rows, snakemake.output.edits)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
