"""Tracing a dataset shard into tidy tables, and collapsing grids into per-layer effects.

Tables (all long format, one row per observation):

* **grid** — ``case_id, kind, window, token_index, token, is_subject, is_last_subject, layer,
  p_restored``: the restored probability of each (token, centre layer) cell. For ``kind ==
  "zero"`` there is one row per layer with ``token_index = -1`` (all subject tokens are zeroed
  together), and ``p_restored`` holds the probability *after zeroing*.
* **facts** — one row per attempted fact: ``case_id, status, p_clean, p_noised, noise_std,
  n_layers, subject_start, subject_end, n_prompt_tokens, target, o_noise, o_noise_equals_true``.
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

A traced fact whose ``|p - p*| <= min_total_effect`` gets status ``no_noise_effect`` and NaN
effects for the noise-based kinds (its zeroing effects are unaffected); a fact with ``p == 0``
gets ``zero_clean_probability`` for kind ``zero``. Facts never traced (subject not found) keep
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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace every fact for every run; returns ``(grid, facts)`` tables (module docstring).

    Args:
        facts: dicts with ``case_id, prompt, subject, target_true``.
        runs: ``{"kind": "mlp"|"attn"|"hidden"|"zero", "window": int}`` items.
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
            row, grid = _trace_fact(model, tokenizer, fact, runs, o_noise_max_tokens, **kw)
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
    try:
        tracer = FactTracer(
            model,
            tokenizer,
            fact["prompt"],
            fact["subject"],
            fact["target_true"],
            noise_std=noise_std,
            samples=samples,
            seed=fact_seed(seed, cid),
            row_budget=row_budget,
            arg_cache=arg_cache,
        )
    except SubjectNotFoundError as err:
        logger.warning("case_id %d: subject not found, not traced (%s)", cid, err)
        return {**row, "status": "subject_not_found", "n_layers": n_layers(model)}, None
    grids = []
    for run in runs:
        kind, window = run["kind"], int(run["window"])
        if kind == "zero":
            grids.append(zero_frame(cid, tracer.zero(window)))
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
    f = facts.set_index("case_id")
    g = grid.join(f[["p_clean", "p_noised"]], on="case_id")
    parts = []
    trace = g[g["kind"] != "zero"].copy()
    if len(trace):
        trace["abs"] = trace["p_restored"] - trace["p_noised"]
        if definition == "paper":
            trace["frac"] = trace["abs"] / (trace["p_clean"] - trace["p_noised"])
        else:
            keys = ["case_id", "kind", "window"]
            high = np.maximum(trace["p_clean"], trace.groupby(keys)["p_restored"].transform("max"))
            trace["frac"] = (trace["abs"] / (high - trace["p_noised"]).abs()).clip(lower=0)
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
