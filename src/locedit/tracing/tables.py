"""Tracing a dataset shard into tidy tables, and collapsing grids into per-layer effects.

Tables (all long format, one row per observation):

* **grid** — ``case_id, kind, window, token_index, token, is_subject, is_last_subject, layer,
  p_restored, score_clean, score_corrupt``: the restored probability of each (token, centre
  layer) cell, and the run's clean and corrupted values. For ``kind == "zero"`` there is one row
  per layer with ``token_index = -1`` (all subject tokens are zeroed together), and
  ``p_restored`` holds the probability *after zeroing*. For a kind with other settings
  (:mod:`locedit.registry.kinds`) ``p_restored`` holds the patched run's value of its metric
  (a probability, a log-probability or a logit difference), and ``score_clean`` /
  ``score_corrupt`` its clean and corrupted runs' (under symmetric token replacement the
  corrupted run is the partner subject's).
* **facts** — one row per attempted fact: ``case_id, status, p_clean, p_noised, noise_std,
  n_layers, subject_start, subject_end, n_prompt_tokens, target, o_noise, o_noise_equals_true,
  str_partner`` (the case_id whose subject replaced this one's, when a run used STR).
  ``status`` is ``ok`` or the reason the fact could not be traced (``subject_not_found``).
* **effects** (``tracing.parquet``) — ``case_id, kind, window, layer, effect_frac_max,
  effect_frac_last, effect_abs_max, effect_abs_last, p_clean, p_noised, noise_std, status``.

Effect definitions (paper-spec §3.7-3.8, §4, §15.9), per fact and centre layer ℓ, with
``r(t, ℓ)`` the restored probability, ``p`` = p_clean, ``p*`` = p_noised:

* ``effect_abs`` = ``r(t, ℓ) - p*`` (ROME's indirect effect);
* ``effect_frac`` with ``definition="paper"`` = ``(r(t, ℓ) - p*) / (p - p*)`` (unclipped);
  with ``definition="authors_code"`` = ``max(0, (r(t, ℓ) - p*) / |h - p*|)`` where
  ``h = max(p, max over the grid of r)`` (the belief-localization R code);
* ``_max`` takes the max over prompt tokens, ``_last`` reads the last subject token.
* ``kind == "zero"``: ``effect_abs = p - p_zeroed(ℓ)``; both ``effect_frac`` columns =
  ``effect_abs / p`` (fraction of the clean probability removed; ``authors_code`` clips it to
  [0, 1]).
* every restoration kind, in its own metric ``m`` with clean value ``m`` = score_clean and
  corrupted ``m*`` = score_corrupt (``p`` and ``p*`` for the paper's kinds): denoising,
  ``effect_abs = r - m*`` and ``effect_frac = (r - m*) / (m - m*)``, the share of the
  corruption's effect that restoring the site undoes; noising, ``effect_abs = m - r`` and
  ``effect_frac = (m - r) / (m - m*)``, the share that corrupting the site alone brings about.
  ``authors_code`` clips at 0 and divides by ``|max(m, max r) - m*|`` (denoising) or
  ``|m - min(m*, min r)|`` (noising). ``p_clean`` / ``p_noised`` of the table are the run's
  ``m`` and ``m*``.

A traced fact whose ``|m - m*| <= min_total_effect`` for a run gets status ``no_noise_effect``
and NaN effects for that run (its zeroing effects are unaffected); a fact with ``p == 0``
gets ``zero_clean_probability`` for kind ``zero``; a fact without a partner subject gets
``no_partner`` for the STR kinds. Facts never traced (subject not found) keep
their status and NaN effects for every run and layer. Nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import n_layers
from locedit.io import open_checkpoints, read_json, write_json, write_parquet
from locedit.registry.kinds import TRACE_KINDS
from locedit.tracing.corruption import str_partner
from locedit.tracing.grids import with_endpoints
from locedit.tracing.passes import SuffixArgsCache
from locedit.tracing.trace import FactTracer, SubjectNotFoundError, TraceResult, ZeroResult
from locedit.seeds import fact_seed

logger = logging.getLogger(__name__)

EFFECT_DEFINITIONS = ("paper", "authors_code")
EFFECT_COLUMNS = [
    "case_id",
    "kind",
    "window",
    "layer",
    "effect_frac_max",
    "effect_frac_last",
    "effect_abs_max",
    "effect_abs_last",
    "p_clean",
    "p_noised",
    "noise_std",
    "status",
]


def grid_frame(case_id: int, res: TraceResult) -> pd.DataFrame:
    """Long-format rows of one tracing grid ``[n_prompt_tokens, n_layers]``."""
    T, L = res.restored.shape
    s0, s1 = res.subject_range
    tok_idx = np.repeat(np.arange(T), L)
    return pd.DataFrame(
        {
            "case_id": int(case_id),
            "kind": res.kind,
            "window": int(res.window),
            "token_index": tok_idx,
            "token": np.repeat(np.array(res.tokens, dtype=object), L),
            "is_subject": (tok_idx >= s0) & (tok_idx < s1),
            "is_last_subject": tok_idx == s1 - 1,
            "layer": np.tile(np.arange(L), T),
            "p_restored": res.restored.reshape(-1),
            "score_clean": float(res.p_clean),
            "score_corrupt": float(res.p_noised),
        }
    )


def zero_frame(case_id: int, res: ZeroResult) -> pd.DataFrame:
    """Long-format rows of one zeroing curve (``token_index = -1``: all subject tokens)."""
    L = len(res.p_zeroed)
    return pd.DataFrame(
        {
            "case_id": int(case_id),
            "kind": "zero",
            "window": int(res.window),
            "token_index": -1,
            "token": "<subject>",
            "is_subject": True,
            "is_last_subject": False,
            "layer": np.arange(L),
            "p_restored": res.p_zeroed,
            "score_clean": float(res.p_clean),
            "score_corrupt": 0.0,  # what zeroing compares with: none of the clean probability
        }
    )


def trace_dataset(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    facts: Iterable[dict],
    runs: Sequence[dict],
    *,
    noise_std: float,
    samples: int,
    seed: int,
    row_budget: int,
    o_noise_max_tokens: int,
    progress: Iterable | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    pool: Sequence[dict] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace every fact for every run; returns ``(grid, facts)`` tables (module docstring).

    Args:
        facts: flat facts (``case_id, prompt, subject, relation_id, target_true, target_new``).
        runs: ``{"kind": <a registered kind>, "window": int}`` items.
        pool: the dataset's flat facts, where a symmetric-token-replacement run finds each
            fact's partner subject (:func:`locedit.tracing.corruption.str_partner`).
        seed: config seed; fact ``c`` uses noise seed :func:`locedit.seeds.fact_seed`.
        cache_dir: per-fact checkpoints (``case_{id}.parquet`` grid rows, then
            ``case_{id}.json`` facts row, which marks the fact done); a rerun resumes from them.
        fingerprint: identity of the settings, code and inputs the checkpoints belong to;
            checkpoints of another fingerprint are discarded (:func:`locedit.io.open_checkpoints`).
    """
    cache = open_checkpoints(cache_dir, fingerprint) if cache_dir is not None else None
    grids, rows, reused = [], [], 0
    kw = dict(
        noise_std=noise_std,
        samples=samples,
        seed=seed,
        row_budget=row_budget,
        arg_cache=SuffixArgsCache(model),  # block arguments shared by facts of equal length
    )
    for fact in facts if progress is None else progress:
        cid = int(fact["case_id"])
        done = cache / f"case_{cid}.json" if cache is not None else None
        if done is not None and done.exists():
            row, grid = read_json(done), None
            if row["status"] == "ok":
                grid = pd.read_parquet(cache / f"case_{cid}.parquet").astype(GRID_COLUMNS)
            reused += 1
        else:
            row, grid = _trace_fact(model, tokenizer, fact, runs, o_noise_max_tokens, pool, **kw)
            if done is not None:
                if grid is not None:
                    write_parquet(grid, cache / f"case_{cid}.parquet")
                write_json(row, done)  # last: the fact counts as done only once both exist
        rows.append(row)
        if grid is not None:
            grids.append(grid)
    if reused:
        logger.info("reused %d checkpointed fact(s) from %s", reused, cache)
    grid = pd.concat(grids, ignore_index=True) if grids else empty_grid()
    return grid, facts_frame(rows)


def _trace_fact(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    fact: dict,
    runs: Sequence[dict],
    o_noise_max_tokens: int,
    pool: Sequence[dict] = (),
    *,
    noise_std: float,
    samples: int,
    seed: int,
    row_budget: int,
    arg_cache: SuffixArgsCache,
) -> tuple[dict, pd.DataFrame | None]:
    """``(facts row, grid rows of every run)`` of one fact; the grid is None if untraceable."""
    cid = int(fact["case_id"])
    row = {"case_id": cid, "target": fact["target_true"], "noise_std": float(noise_std)}
    common = dict(row_budget=row_budget, arg_cache=arg_cache, contrast=fact.get("target_new"))
    args = (model, tokenizer, fact["prompt"], fact["subject"], fact["target_true"])
    try:
        tracer = FactTracer(*args, noise_std=noise_std, samples=samples, seed=fact_seed(seed, cid), **common)
    except SubjectNotFoundError as err:
        logger.warning("case_id %d: subject not found, not traced (%s)", cid, err)
        return {**row, "status": "subject_not_found", "n_layers": n_layers(model)}, None
    replaced = None  # the tracer of symmetric token replacement, built on first use
    grids = []
    for run in runs:
        kind, window = run["kind"], int(run["window"])
        if kind == "zero":
            grids.append(zero_frame(cid, tracer.zero(window)))
        elif TRACE_KINDS[kind].corruption == "str":
            if replaced is None:
                found = str_partner(tokenizer, fact, pool, seed)
                if found is None:
                    logger.warning("case_id %d: no partner subject of the same token length with "
                                   "another answer: not traced by symmetric token replacement", cid)
                    replaced = False
                else:
                    partner, ids = found
                    row["str_partner"] = int(partner["case_id"])
                    replaced = FactTracer(*args, noise_std=0.0, samples=1, replacement=ids, **common)
            if replaced:
                grids.append(grid_frame(cid, replaced.trace(kind, window)))
        else:
            grids.append(grid_frame(cid, tracer.trace(kind, window)))
    o_noise = tracer.o_noise(o_noise_max_tokens)
    row = {
        **row,
        "status": "ok",
        "p_clean": tracer.p_clean,
        "p_noised": tracer.p_noised,
        "n_layers": tracer.n_layers,
        "subject_start": tracer.subject_range[0],
        "subject_end": tracer.subject_range[1],
        "n_prompt_tokens": len(tracer.prompt_ids),
        "o_noise": o_noise,
        "o_noise_equals_true": o_noise.strip().lower()
        == str(fact["target_true"]).strip().lower(),
    }
    return row, pd.concat(grids, ignore_index=True).astype(GRID_COLUMNS)


FACT_COLUMNS = {
    "case_id": "int64",
    "status": "object",
    "p_clean": "float64",
    "p_noised": "float64",
    "noise_std": "float64",
    "n_layers": "int64",
    "subject_start": "Int64",
    "subject_end": "Int64",
    "n_prompt_tokens": "Int64",
    "target": "object",
    "o_noise": "object",
    "o_noise_equals_true": "boolean",
    "str_partner": "Int64",
}


def facts_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(FACT_COLUMNS))
    return df.astype(FACT_COLUMNS)


GRID_COLUMNS = {
    "case_id": "int64",
    "kind": "object",
    "window": "int64",
    "token_index": "int64",
    "token": "object",
    "is_subject": "bool",
    "is_last_subject": "bool",
    "layer": "int64",
    "p_restored": "float64",
    "score_clean": "float64",
    "score_corrupt": "float64",
}


def empty_grid() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in GRID_COLUMNS.items()})


def layer_effects(
    grid: pd.DataFrame,
    facts: pd.DataFrame,
    runs: Sequence[dict],
    *,
    definition: str = "paper",
    min_total_effect: float = 1e-6,
) -> pd.DataFrame:
    """Per (case_id, kind, window, layer) effects; see the module docstring for definitions."""
    if definition not in EFFECT_DEFINITIONS:
        raise ValueError(
            f"tracing.effect_definition must be one of {EFFECT_DEFINITIONS}, got {definition!r}"
        )
    grid = with_endpoints(grid, facts)
    f = facts.set_index("case_id")
    g = grid.join(f[["p_clean", "p_noised"]], on="case_id")
    parts = []
    trace = g[g["kind"] != "zero"].copy()
    if len(trace):
        clean, corrupt, r = trace["score_clean"], trace["score_corrupt"], trace["p_restored"]
        noising = np.array([TRACE_KINDS[k].direction == "noise" for k in trace["kind"]], dtype=bool)
        trace["abs"] = np.where(noising, clean - r, r - corrupt)
        if definition == "paper":
            trace["frac"] = trace["abs"] / (clean - corrupt)
        else:
            keys = ["case_id", "kind", "window"]
            high = np.maximum(clean, trace.groupby(keys)["p_restored"].transform("max"))
            low = np.minimum(corrupt, trace.groupby(keys)["p_restored"].transform("min"))
            span = np.where(noising, clean - low, high - corrupt)
            trace["frac"] = (trace["abs"] / np.abs(span)).clip(lower=0)
        parts.append(trace)
    zero = g[g["kind"] == "zero"].copy()
    if len(zero):
        zero["abs"] = zero["p_clean"] - zero["p_restored"]
        zero["frac"] = zero["abs"] / zero["p_clean"]
        if definition == "authors_code":
            zero["frac"] = zero["frac"].clip(0, 1)
        zero["is_last_subject"] = True  # one row per layer: "last" = the same value as "max"
        parts.append(zero)
    keys = ["case_id", "kind", "window", "layer"]
    if parts:
        cells = pd.concat(parts, ignore_index=True)
        mx = cells.groupby(keys)[["frac", "abs"]].max()
        last = cells[cells["is_last_subject"]].groupby(keys)[["frac", "abs"]].max()
        eff = mx.join(last, lsuffix="_max", rsuffix="_last").reset_index()
        eff = eff.rename(
            columns={
                "frac_max": "effect_frac_max",
                "frac_last": "effect_frac_last",
                "abs_max": "effect_abs_max",
                "abs_last": "effect_abs_last",
            }
        )
    else:
        eff = pd.DataFrame(
            columns=keys
            + ["effect_frac_max", "effect_frac_last", "effect_abs_max", "effect_abs_last"]
        )
    # The frame of every (attempted fact, run, layer), so failed facts keep their rows.
    frame = [
        {"case_id": cid, "kind": r["kind"], "window": int(r["window"]), "layer": layer}
        for cid, n in zip(facts["case_id"], facts["n_layers"])
        for r in runs
        for layer in range(int(n))
    ]
    out = pd.DataFrame(frame, columns=keys).astype(
        {"case_id": "int64", "window": "int64", "layer": "int64"}
    )
    eff = eff.astype({"case_id": "int64", "window": "int64", "layer": "int64"})
    out = out.merge(eff, on=keys, how="left")
    out = out.join(f[["p_clean", "p_noised", "noise_std", "status"]], on="case_id")
    # a run's own clean and corrupted values (its metric; the partner's run under STR)
    ends = grid[grid["kind"] != "zero"].groupby(["case_id", "kind", "window"])[["score_clean", "score_corrupt"]].first()
    out = out.join(ends, on=["case_id", "kind", "window"])
    own = out["score_clean"].notna()
    out.loc[own, "p_clean"], out.loc[own, "p_noised"] = out.loc[own, "score_clean"], out.loc[own, "score_corrupt"]
    replaced = np.array([TRACE_KINDS[k].corruption == "str" for k in out["kind"]], dtype=bool)
    out.loc[(out["status"] == "ok") & replaced & ~own, "status"] = "no_partner"
    no_noise = (
        (out["status"] == "ok")
        & (out["kind"] != "zero")
        & ((out["p_clean"] - out["p_noised"]).abs() <= min_total_effect)
    )
    out.loc[no_noise, "status"] = "no_noise_effect"
    zero_p = (out["status"] == "ok") & (out["kind"] == "zero") & ~(out["p_clean"] > 0)
    out.loc[zero_p, "status"] = "zero_clean_probability"
    effect_cols = ["effect_frac_max", "effect_frac_last", "effect_abs_max", "effect_abs_last"]
    out[effect_cols] = out[effect_cols].astype("float64")
    out.loc[out["status"] != "ok", effect_cols] = np.nan
    return out[EFFECT_COLUMNS].sort_values(keys, ignore_index=True)


def peak_layers(effects: pd.DataFrame, kind: str, window: int) -> pd.DataFrame:
    """Per fact, the layer where ``effect_frac_max`` peaks (Fig. 1); ``ok`` facts only."""
    sel = effects[
        (effects["kind"] == kind) & (effects["window"] == window) & (effects["status"] == "ok")
    ]
    sel = sel.dropna(subset=["effect_frac_max"])
    idx = sel.groupby("case_id")["effect_frac_max"].idxmax()
    return sel.loc[idx, ["case_id", "layer", "effect_frac_max"]].reset_index(drop=True)
