"""Method-independent edit inputs, computed once per datapoint and reused by every edit job.

For each record of a shard: the essence texts (sampled once from the pre-edit model,
:func:`sample_essence`) and, per eligible variant, the case (:func:`locedit.editing.variants.build_case`) with its pre-edit probe
probabilities and essence perplexity — under the noised subject for fact forcing. Nothing here
depends on the edit method or layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from locedit.adapters import d_model
from locedit.editing.essence import ESSENCE_PROMPT, perplexities, sample_texts
from locedit.editing.evaluate import FAMILIES, probe_probabilities
from locedit.editing.probes import case_probes
from locedit.editing.variants import build_case, case_noise, eligibility
from locedit.seeds import derived_seed
from locedit.io import checkpointed, open_checkpoints, read_json

logger = logging.getLogger(__name__)


def load_shard(
    records_path: str, facts_path: str, shard: Sequence[int]
) -> tuple[list[dict], dict[int, dict]]:
    """The records at positions ``[start, stop)`` and every fact-table row keyed by ``case_id``."""
    start, stop = shard
    records = read_json(records_path)[start:stop]
    facts = {int(row["case_id"]): row for row in pd.read_parquet(facts_path).to_dict("records")}
    return records, facts


def sample_essence(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    records: Sequence[dict],
    facts: Mapping[int, dict],
    *,
    essence: dict,
    seed: int,
    only_correct: bool = True,
    progress=None,
) -> dict[int, dict]:
    """``case_id -> {"texts": [...], "ppl": mean clean perplexity}`` for every fact edited.

    Sampled once per fact from the pre-edit model and shared by every variant, method and layer.
    """
    out = {}
    for record in tqdm(records, desc="essence texts", file=progress, mininterval=5):
        cid = int(record["case_id"])
        if cid not in facts:
            raise KeyError(f"case_id {cid} of records.json is missing from facts.parquet")
        if only_correct and not bool(facts[cid]["is_correct"]):
            continue
        subject = record["requested_rewrite"]["subject"]
        texts = sample_texts(
            model,
            tok,
            ESSENCE_PROMPT.format(subject),
            n=int(essence["n_texts"]),
            top_k=int(essence["top_k"]),
            max_new_tokens=int(essence["max_new_tokens"]),
            seed=derived_seed(seed, cid, "essence"),
        )
        ppl = perplexities(model, tok, texts, max_tokens=int(essence["max_tokens"]))
        out[cid] = {"texts": texts, "ppl": float(sum(ppl) / len(ppl)) if ppl else float("nan")}
    return out


def prepare_inputs(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    records: Sequence[dict],
    facts: Mapping[int, dict],
    *,
    variants: Sequence[str],
    o_noise: Mapping[int, str],
    noise_std: float | None,
    essence: dict,
    seed: int,
    only_correct: bool = True,
    erasure_only_eligible: bool = True,
    neighborhood_target: str = "variant",
    batch_size: int = 64,
    essence_texts: Mapping[int, dict] | None = None,
    progress=None,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    probes: dict | None = None,
    others: Mapping[str, list] | None = None,
) -> dict:
    """``{"cases": [...], "skipped": [...]}`` for ``records``.

    Args:
        facts: ``case_id`` → row of ``facts.parquet``.
        o_noise: ``case_id`` → tracing-reversal target.
        noise_std: fact forcing's σ (``tracing/noise.json``); required when fact forcing runs.
        essence: ``n_texts``, ``top_k``, ``max_new_tokens``, ``max_tokens``.
        seed: master seed (essence sampling and noise seeds derive from it and the case_id).
        essence_texts: :func:`sample_essence` output (sampled here when ``None``).
        cache_dir: per-record checkpoints (``case_{id}.json``, written atomically once the
            record is done); a rerun after a kill resumes from them.
        fingerprint: identity of the settings, code and inputs the checkpoints belong to;
            checkpoints of another fingerprint are discarded (:func:`locedit.io.open_checkpoints`).
        probes: the ``editing.probes`` settings; when ``enabled``, each case gets its
            generalisation probes (:mod:`locedit.editing.probes`) and their pre-edit greedy hits.
        others: :func:`locedit.editing.probes.other_subjects_index` of the whole dataset.
    """
    cache = open_checkpoints(cache_dir, fingerprint) if cache_dir is not None else None
    dm = d_model(model)

    def record_inputs(record: dict) -> dict:
        """``{"cases": [...], "skipped": [...]}`` of one record."""
        cid = int(record["case_id"])
        out = {"cases": [], "skipped": []}
        todo = []
        for variant in variants:
            reason = eligibility(
                variant,
                facts[cid],
                o_noise=o_noise.get(cid),
                only_correct=only_correct,
                erasure_only_eligible=erasure_only_eligible,
            )
            if reason is None:
                todo.append(variant)
            else:
                out["skipped"].append({"case_id": cid, "variant": variant, "reason": reason})
        if not todo:
            return out
        subject = record["requested_rewrite"]["subject"]
        if essence_texts is None:
            ess = sample_essence(
                model, tok, [record], facts, essence=essence, seed=seed, only_correct=False
            )[cid]
        elif cid in essence_texts:
            ess = essence_texts[cid]
        else:
            raise KeyError(f"case_id {cid}: no essence texts (sample_essence skipped it)")
        texts = ess["texts"]
        for variant in todo:
            case = build_case(
                record,
                variant,
                o_noise=o_noise.get(cid),
                neighborhood_target=neighborhood_target,
                noise_std=noise_std,
                seed=seed,
            )
            if probes and probes["enabled"]:
                prompts = case_probes(
                    record,
                    case,
                    others or {},
                    other_subjects=int(probes["other_subjects"]),
                    generic_prompts=probes["generic_prompts"],
                )
                if prompts is not None:
                    case["probes"] = prompts
            noise = case_noise(case, tok, dm)
            case["pre"], hits = probe_probabilities(
                model, tok, case, noise=noise, batch_size=batch_size, greedy=True
            )
            # what the unedited model generates: the edit's generation-based scores start here
            case["pre_gen"] = {fam: hits.get(fam, {}) for fam in FAMILIES}
            if "probes" in case:
                case["pre_greedy"] = hits
            if noise is None:
                case["essence_ppl_pre"] = float(ess["ppl"])
            else:  # fact forcing: the subject inside the texts is noised too
                ppl = perplexities(
                    model, tok, texts, max_tokens=int(essence["max_tokens"]), subject=subject,
                    noise=noise,
                )  # fmt: skip
                case["essence_ppl_pre"] = float(sum(ppl) / len(ppl)) if ppl else float("nan")
            case["essence_texts"] = texts
            out["cases"].append(case)
        return out

    cases, skipped, reused = [], [], 0
    for record in tqdm(records, desc="edit inputs", file=progress, mininterval=5):
        cid = int(record["case_id"])
        if cid not in facts:
            raise KeyError(f"case_id {cid} of records.json is missing from facts.parquet")
        part, was_done = checkpointed(cache, cid, lambda: record_inputs(record))
        cases += part["cases"]
        skipped += part["skipped"]
        reused += was_done
    if reused:
        logger.info("reused %d checkpointed record(s) from %s", reused, cache)
    logger.info("%d edit case(s) prepared, %d (case, variant) pair(s) skipped", len(cases), len(skipped))
    return {"cases": cases, "skipped": skipped}
