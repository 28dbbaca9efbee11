"""The edit job loop: for each case apply → evaluate → restore, checkpointed per case.

One job covers (datapoint shard, variant, method, layer). The model is loaded once by the
caller; every edit is undone by copying back the weights its method saved in a
:class:`~locedit.editing.types.Snapshot` (bit-exact, never a deep copy of the model). Each finished
case is written atomically to ``cache_dir/{case_id}.json`` so a killed job resumes where it
stopped; the declared shard output is written by the caller from the returned rows.

Methods come from :data:`locedit.registry.methods.METHODS`. Two paths compute the same edits
(to float rounding): the batched engine (default; a method's ``batch`` function), which
optimises many facts' edits together and hands them out one at a time, and the per-fact path
(its ``apply`` function, ``engine=None``), the authors' algorithm as written, kept as the
baseline the engine is tested and benchmarked against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from locedit.registry.methods import get_method
from locedit.adapters import d_model, n_layers
from locedit.editing.evaluate import evaluate_case
from locedit.editing.metrics import GEN_COLUMNS, edit_scores, generation_scores
from locedit.editing.probes import COLUMNS as PROBE_COLUMNS
from locedit.editing.probes import probe_scores
from locedit.editing.types import restore
from locedit.editing.variants import build_request, case_noise
from locedit.editing.vectors import vectors_from_json, vectors_to_json
from locedit.io import open_checkpoints, read_chunk, write_chunk

logger = logging.getLogger(__name__)

#: Facts the batched engine edits together and checkpoints together, in one file (default of
#: ``editing.engine.chunk``). A fact's result depends on which facts share its batches (the float
#: rounding of batched matmuls), so a job resumed after a kill recomputes a cut-off chunk whole,
#: never its remaining facts alone: the resumed job's results equal an uninterrupted run's bit for
#: bit. (The per-fact path checkpoints every fact.)
ENGINE_CHUNK = 256

#: Columns of ``edits.parquet`` in order (the analysis stage builds on exactly these names); the
#: generalisation probes' are NaN unless ``editing.probes`` is on.
EDIT_COLUMNS = [
    "case_id", "variant", "method", "layer", "target", "contrast", "subject",
    "rewrite_score", "paraphrase_score", "neighborhood_score", "overall_score", "essence_score",
    "rewrite_pre", "rewrite_post", "paraphrase_pre", "paraphrase_post",
    "neighborhood_pre", "neighborhood_post", "essence_ppl_pre", "essence_ppl_post",
    "efficacy_success", "efficacy_magnitude", "paraphrase_success", "paraphrase_magnitude",
    "neighborhood_success", "neighborhood_magnitude",
    *GEN_COLUMNS,
    *PROBE_COLUMNS,
    "opt_seconds", "update_seconds", "eval_seconds", "edit_seconds", "edited_layers",
]  # fmt: skip


def edit_one(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    case: dict,
    method: str,
    layer: int,
    hparams: dict,
    *,
    stats=None,
    context_templates: Sequence[str] | None = None,
    **scoring,
) -> dict:
    """Apply one edit with the per-fact path, evaluate it, restore the weights; the results row.

    ``case`` must carry the pre-edit values of ``prepare_edit_inputs`` (``pre``,
    ``essence_texts``, ``essence_ppl_pre``). ``scoring``: see :func:`score_edit`.
    """
    spec = get_method(method)
    hp = spec.resolve(hparams)
    request = build_request(case, tok, d_model(model))
    t0 = time.perf_counter()
    templates = list(context_templates or [])
    snapshot, info = spec.function()(model, tok, request, layer, hp, stats, templates)
    return score_edit(model, tok, case, method, layer, snapshot, info, time.perf_counter() - t0, **scoring)


def score_edit(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    case: dict,
    method: str,
    layer: int,
    snapshot,
    info: dict,
    edit_seconds: float,
    *,
    aggregation: str = "mean",
    essence_cap: float = 5.0,
    essence_max_tokens: int = 100,
    batch_size: int = 64,
) -> dict:
    """Evaluate the applied edit of ``case``, restore the weights (even if evaluation fails)
    and return the results row."""
    t1 = time.perf_counter()
    try:
        post, ppl_post, hits = evaluate_case(
            model,
            tok,
            case,
            case["essence_texts"],
            noise=case_noise(case, tok, d_model(model)),
            max_tokens=essence_max_tokens,
            batch_size=batch_size,
        )
    finally:
        restore(model, snapshot)
    t2 = time.perf_counter()
    row = {
        "case_id": int(case["case_id"]),
        "variant": case["variant"],
        "method": method,
        "layer": int(layer),
        "target": case["target"],
        "contrast": case["contrast"],
        "subject": case["subject"],
    }
    row.update(
        edit_scores(
            case,
            case["pre"],
            post,
            case["essence_ppl_pre"],
            ppl_post,
            aggregation=aggregation,
            cap=essence_cap,
        )
    )
    row.update(generation_scores(case, case.get("pre_gen", {}), hits))
    row.update(probe_scores(case, case["pre"], post, case.get("pre_greedy")))
    opt_s = float(info.get("opt_seconds", edit_seconds))
    row.update(
        {
            "opt_seconds": opt_s,
            "update_seconds": float(info.get("update_seconds", max(0.0, edit_seconds - opt_s))),
            "eval_seconds": t2 - t1,
            "edit_seconds": edit_seconds,
            "edited_layers": str(
                info.get("edited_layers") or ",".join(str(x) for x in info.get("layers", [layer]))
            ),
        }
    )
    return row


def run_edit_job(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    cases: Sequence[dict],
    method: str,
    layer: int,
    hparams: dict,
    *,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    progress=None,
    engine: dict | None = None,
    stats=None,
    context_templates: Sequence[str] | None = None,
    exported: dict | None = None,
    replayed: Mapping[int, tuple[dict, float]] | None = None,
    **scoring,
) -> pd.DataFrame:
    """Edit every case of one job; per-case results are checkpointed in ``cache_dir``.

    Args:
        cases: eligible cases of one variant with their pre-edit values.
        cache_dir: checkpoints, reused when present (resumption): one JSON file per chunk of
            cases (one case on the per-fact path; ``engine["chunk"]`` cases, default
            ENGINE_CHUNK, with the engine), written atomically once the whole chunk is done.
        fingerprint: identity of everything the rows depend on (settings, code, inputs);
            checkpoints written under another fingerprint are discarded, never reused.
        progress: file object for the tqdm bar (the rule's log).
        hparams: ``editing.methods.<method>`` with its variant's overrides merged
            (:func:`locedit.editing.hparams.merge_variant`), or the method's typed hyperparameters.
        engine: ``{"row_budget": ..., "max_facts": ..., "chunk": ...}`` runs the method's
            batched engine; None runs its per-fact path.
        stats, context_templates: ROME/MEMIT's covariance statistics and templates.
        exported: a dict to fill with ``{case_id: vectors}`` of the method's edits (the
            ``vectors`` its functions report; checkpointed with the rows), for a method that
            replays them (:mod:`locedit.editing.vectors`).
        replayed: ``{case_id: (vectors, opt_seconds)}`` another method exported; the method's
            ``replay`` function builds each edit from them (no optimisation).
        **scoring: passed to :func:`score_edit` (aggregation, essence_cap, ...).

    Returns:
        One row per case, in case order.
    """
    spec = get_method(method)
    hp = spec.resolve(hparams)
    total = n_layers(model)
    if not 0 <= int(layer) < total:
        raise ValueError(f"editing.layers: layer {layer} outside [0, {total}) for this model")
    cache = open_checkpoints(cache_dir, fingerprint) if cache_dir is not None else None
    size = 1 if engine is None else int(engine.get("chunk", ENGINE_CHUNK))
    chunks = [range(s, min(s + size, len(cases))) for s in range(0, len(cases), size)]
    done: list[dict | None] = [None] * len(cases)
    for chunk in chunks:
        rows = read_chunk(cache, [int(cases[i]["case_id"]) for i in chunk])
        for i, row in zip(chunk, rows or ()):
            done[i] = row
    todo = [c for c in chunks if done[c[0]] is None]
    n_todo = sum(len(c) for c in todo)
    if n_todo < len(cases):
        logger.info("reused %d checkpointed edit(s) from %s", len(cases) - n_todo, cache)
    templates = list(context_templates or [])
    bar = tqdm(total=n_todo, desc=f"{method} L{layer}", file=progress, mininterval=5)
    engine_kw = None if engine is None else {k: v for k, v in engine.items() if k != "chunk"}
    for chunk in todo:
        requests = [build_request(cases[i], tok, d_model(model)) for i in chunk]
        if replayed is not None:
            fn = spec.function(replay=True)
            edits = (fn(model, int(layer), *_replayed(replayed, cases[i])) for i in chunk)
        elif engine is not None and spec.batch is not None:
            batch = spec.function(batched=True)
            edits = batch(model, tok, requests, int(layer), hp, stats, templates, **engine_kw)
        else:
            fn = spec.function()
            edits = (fn(model, tok, r, int(layer), hp, stats, templates) for r in requests)
        t0 = time.perf_counter()
        for i, (snapshot, info) in zip(chunk, edits):
            # the engine's shared work lands on the edits it is handed out with
            edit_s = time.perf_counter() - t0
            done[i] = score_edit(model, tok, cases[i], method, int(layer), snapshot, info, edit_s, **scoring)
            if exported is not None:
                done[i]["vectors"] = vectors_to_json(info["vectors"])
            bar.update()
            t0 = time.perf_counter()
        # One file per chunk, renamed into place: a chunk is checkpointed whole or not at all.
        write_chunk(cache, [int(cases[i]["case_id"]) for i in chunk], [done[i] for i in chunk])
    bar.close()
    if exported is not None:
        for case, row in zip(cases, done):
            exported[int(case["case_id"])] = vectors_from_json(row["vectors"])
    return as_edit_table(done)


def _replayed(replayed: Mapping[int, tuple[dict, float]], case: dict) -> tuple[dict, float]:
    try:
        return replayed[int(case["case_id"])]
    except KeyError:
        raise ValueError(f"case {case['case_id']}: no exported vectors to replay") from None


def as_edit_table(rows) -> pd.DataFrame:
    """Rows (dicts or a frame) as a frame with exactly :data:`EDIT_COLUMNS`, typed."""
    df = pd.DataFrame(rows).reindex(columns=EDIT_COLUMNS)
    for col in ("case_id", "layer"):
        df[col] = df[col].astype("int64")
    for col in ("variant", "method", "target", "contrast", "subject", "edited_layers"):
        df[col] = df[col].astype("string")
    floats = [c for c in EDIT_COLUMNS if c not in {"case_id", "layer", "variant", "method",
              "target", "contrast", "subject", "edited_layers"}]  # fmt: skip
    df[floats] = df[floats].astype("float64")
    return df


def collect_shards(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate edit shard tables, sorted by (variant, method, layer, case_id)."""
    frames = [as_edit_table(pd.read_parquet(p)) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else as_edit_table([])
    dup = df.duplicated(["case_id", "variant", "method", "layer"])
    if dup.any():
        raise ValueError(f"duplicate edits in the shards: {df.loc[dup, ['case_id', 'variant', 'method', 'layer']].head()}")
    return df.sort_values(["variant", "method", "layer", "case_id"], ignore_index=True)


def method_resources(method: str, model, stats_dir, templates_path) -> tuple:
    """``(covariance statistics, context templates)`` a method's edits read (``(None, [])`` for
    methods without them, and for replays, which read their source's u)."""
    spec = get_method(method)
    if not spec.needs_stats or spec.reuses:
        return None, []
    from locedit.editing.covariance import CovarianceStore
    from locedit.io import read_json

    stats = CovarianceStore.from_dir(stats_dir, model=model)
    return stats, read_json(templates_path)[spec.templates]


def engine_options(engine: Mapping) -> dict | None:
    """``run_edit_job``'s engine options from the ``editing.engine`` config (None: per fact)."""
    if not engine["batched"]:
        return None
    return {"row_budget": engine["row_budget"], "max_facts": engine["max_facts"],
            "chunk": engine["chunk"]}
