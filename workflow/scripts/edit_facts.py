"""Rule edit_facts: one (variant, method, shard) edit job over its central layers (one, or all:
``editing.layers_per_job``).

Loads the model once, then for every layer and every eligible case of the shard applies the edit,
evaluates it and restores the weights bit-exactly (locedit.editing.driver). Finished cases are checkpointed
in ``params.cache`` (per-case JSON, stamped with a fingerprint of the job's settings and inputs,
so only a job cut off under the same settings reuses them) and a killed job resumes there; the
shard table ``edits`` is written atomically at the end.
"""

import logging

import pandas as pd
import torch

from locedit.registry.methods import get_method
from locedit.editing.driver import run_edit_job
from locedit.io import read_json, write_parquet
from locedit.modeling import load_model
from locedit.workflow import job_fingerprint, log_stream, setup_logging

logger = logging.getLogger(__name__)


def load_stats(snakemake, model, method: str):
    """Covariance statistics and the method's context templates (methods that need them)."""
    spec = get_method(method)
    if not spec.needs_stats:
        return None, []
    from locedit.editing.covariance import CovarianceStore

    stats = CovarianceStore.from_dir(snakemake.input.stats, model=model)
    templates = read_json(snakemake.input.templates)[spec.templates]
    return stats, templates


def fingerprint(snakemake) -> str:
    """Identity of the job's checkpoints: params that shape a row, code hash and inputs. Not the
    job's layers: each layer checkpoints in its own directory, so a job that gains a layer reuses
    the others' edits."""
    p = snakemake.params
    keys = ("model", "hparams", "engine", "aggregation", "essence", "batch_size", "code")
    settings = {k: getattr(p, k) for k in keys}
    return job_fingerprint(settings, snakemake.input)


def engine_options(engine: dict) -> dict | None:
    """The driver's engine options (None: the per-fact path)."""
    if not engine["batched"]:
        return None
    return {"row_budget": engine["row_budget"], "max_facts": engine["max_facts"]}


def result_paths(snakemake) -> list[str]:
    """The job's result files, one per layer of ``params.layers`` (same order)."""
    out = snakemake.output.edits
    paths = [out] if isinstance(out, str) else list(out)
    if len(paths) != len(snakemake.params.layers):
        raise ValueError(f"{len(paths)} result files for layers {snakemake.params.layers}")
    return paths


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p, w = snakemake.params, snakemake.wildcards
    method, variant = w.method, w.variant
    cases = read_json(snakemake.input.inputs)["cases"]
    if any(c["variant"] != variant for c in cases):
        raise ValueError(f"{snakemake.input.inputs} holds cases of another variant than {variant}")
    logger.info("%s / %s / layers %s: %d case(s); hparams %s", variant, method, p.layers, len(cases), p.hparams)
    tables = {layer: pd.DataFrame() for layer in p.layers}
    if cases:
        model, tok = load_model(**p.model)  # once for every layer of the job
        stats, templates = load_stats(snakemake, model, method)
        for layer in p.layers:
            with log_stream(snakemake) as progress:
                rows = run_edit_job(
                    model,
                    tok,
                    cases,
                    method,
                    layer,
                    p.hparams,
                    cache_dir=p.cache[str(layer)],
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
                "layer %d: mean rewrite %.3f, paraphrase %.3f, neighborhood %.3f; %.3f s/edit",
                layer,
                rows["rewrite_score"].mean(),
                rows["paraphrase_score"].mean(),
                rows["neighborhood_score"].mean(),
                (rows["edit_seconds"] + rows["eval_seconds"]).mean(),
            )
            tables[layer] = rows
    for layer, path in zip(p.layers, result_paths(snakemake)):
        write_parquet(tables[layer], path)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
