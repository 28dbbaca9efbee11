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
from locedit.editing.driver import engine_options, method_resources, run_edit_job
from locedit.editing.vectors import read_edit_vectors, write_edit_vectors
from locedit.io import read_json, write_parquet
from locedit.modeling import load_model
from locedit.workflow import job_fingerprint, log_stream, setup_logging

logger = logging.getLogger(__name__)


def fingerprint(snakemake) -> str:
    """Identity of the job's checkpoints: params that shape a row, code hash and inputs. Not the
    job's layers: each layer checkpoints in its own directory, so a job that gains a layer reuses
    the others' edits."""
    p = snakemake.params
    keys = ("model", "hparams", "engine", "aggregation", "essence", "batch_size", "code")
    settings = {k: getattr(p, k) for k in keys}
    return job_fingerprint(settings, snakemake.input)


def tuned_hparams(hparams: dict, tuned: str | None) -> dict:
    """The job's hyperparameters with the tuning stage's chosen values (editing.tuning) over them."""
    if not tuned:
        return dict(hparams)
    return {**hparams, **read_json(tuned)["values"]}


def per_layer(snakemake, files, what: str) -> list[str]:
    """A file list of the job, one per layer of ``params.layers`` (same order)."""
    paths = [files] if isinstance(files, str) else list(files)
    if len(paths) != len(snakemake.params.layers):
        raise ValueError(f"{len(paths)} {what} for layers {snakemake.params.layers}")
    return paths


def replayed_vectors(snakemake, method: str) -> dict:
    """``{layer: {case_id: (vectors, opt_seconds)}}`` the method replays (None: it optimises)."""
    if not get_method(method).reuses:
        return {}
    paths = per_layer(snakemake, snakemake.input.vectors, "vector files")
    return {layer: read_edit_vectors(path) for layer, path in zip(snakemake.params.layers, paths)}


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p, w = snakemake.params, snakemake.wildcards
    method, variant = w.method, w.variant
    cases = read_json(snakemake.input.inputs)["cases"]
    if any(c["variant"] != variant for c in cases):
        raise ValueError(f"{snakemake.input.inputs} holds cases of another variant than {variant}")
    tables = {layer: pd.DataFrame() for layer in p.layers}
    exported = {layer: {} for layer in p.layers}
    replayed = replayed_vectors(snakemake, method)
    hparams = tuned_hparams(p.hparams, snakemake.input.get("tuned"))
    logger.info("%s / %s / layers %s: %d case(s); hparams %s", variant, method, p.layers, len(cases), hparams)
    if cases:
        model, tok = load_model(**p.model)  # once for every layer of the job
        stats, templates = method_resources(
            method, model, snakemake.input.get("stats"), snakemake.input.get("templates")
        )
        for layer in p.layers:
            with log_stream(snakemake) as progress:
                rows = run_edit_job(
                    model,
                    tok,
                    cases,
                    method,
                    layer,
                    hparams,
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
                    exported=exported[layer] if get_method(method).exports else None,
                    replayed=replayed.get(layer),
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
    if get_method(method).exports:
        for layer, path in zip(p.layers, per_layer(snakemake, snakemake.output.vectors, "vector files")):
            rows = tables[layer]
            seconds = dict(zip(map(int, rows.get("case_id", [])), map(float, rows.get("opt_seconds", []))))
            write_edit_vectors(exported[layer], seconds, path)
    for layer, path in zip(p.layers, per_layer(snakemake, snakemake.output.edits, "result files")):
        write_parquet(tables[layer], path)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
