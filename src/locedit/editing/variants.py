"""The five editing problems (paper §5.1, Fig. 5): target choice, eligibility, fact-forcing noise.

A *case* is the method-independent description of one (datapoint, variant) pair, a plain
JSON-serialisable dict built by :func:`build_case`, enriched with pre-edit probabilities and
essence texts by ``prepare_edit_inputs`` and turned into an :class:`EditRequest` per edit by
:func:`build_request`.

============================  ==========================  ======================  =========
variant                       target y                    contrast b (unscaled)   objective
============================  ==========================  ======================  =========
``error_injection``           o_false (``target_new``)    o_true                  max p(y|s,r)
``tracing_reversal``          o_noise (tracing stage)     o_true                  max p(y|s,r)
``fact_erasure``              o_true                      o_false                 min p(y|s,r)
``fact_amplification``        o_true                      o_false                 max p(y|s,r)
``fact_forcing``              o_true                      o_false                 max p(y|s_noise,r)
============================  ==========================  ======================  =========

The authors' code uses EOS as the erasure/amplification contrast ("won't use these metrics
anyway") and the argmax token under noise for fact forcing; we use o_false so the unscaled
metrics compare two real objects (README, "Editing choices").
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from locedit.registry.variants import VARIANTS
from locedit.editing.types import EditRequest
from locedit.noise import subject_noise
from locedit.registry.variants import ERROR_INJECTION, FACT_ERASURE, FACT_FORCING, TRACING_REVERSAL
from locedit.seeds import derived_seed

#: The editing problems' names, in the paper's order (:data:`locedit.registry.variants.VARIANTS`).
VARIANTS = tuple(VARIANTS)
EI, TR, FE, FF = (v.name for v in (ERROR_INJECTION, TRACING_REVERSAL, FACT_ERASURE, FACT_FORCING))

#: Extra noise rows beyond the subject's bare token count: a subject inside another context can
#: tokenise into a few more pieces (e.g. without its leading space at the start of a text).
NOISE_ROW_SLACK = 4


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown editing variant {variant!r}; expected one of {VARIANTS}")
    return variant


def eligibility(
    variant: str,
    fact: dict,
    *,
    o_noise: str | None,
    only_correct: bool = True,
    erasure_only_eligible: bool = True,
) -> str | None:
    """Why a fact is *not* edited under ``variant`` (``None`` when it is eligible).

    Args:
        fact: a row of ``facts.parquet`` (``is_correct``, ``erasure_eligible``, ``target_true``).
        o_noise: the tracing-reversal target (``None``/empty when tracing produced none).
        only_correct: edit only facts the model knows (``is_correct``; paper App. A).
        erasure_only_eligible: fact erasure only on ``erasure_eligible`` facts (p ≥ .02; paper
            §5.1 n=489; paper-spec §15 item 3).
    """
    check_variant(variant)
    if only_correct and not bool(fact["is_correct"]):
        return "not is_correct"
    if variant == FE and erasure_only_eligible and not bool(fact["erasure_eligible"]):
        return "not erasure_eligible"
    if variant == TR:
        if not isinstance(o_noise, str) or not o_noise.strip():  # None, NaN from parquet, ""
            return "no o_noise"
        if o_noise.strip().lower() == str(fact["target_true"]).strip().lower():
            return "o_noise equals o_true"
    return None


def build_case(
    record: dict,
    variant: str,
    *,
    o_noise: str | None,
    neighborhood_target: str = "variant",
    noise_std: float | None = None,
    seed: int = 0,
) -> dict:
    """The method-independent description of editing ``record`` under ``variant``.

    Args:
        record: a CounterFact-shaped record.
        o_noise: the tracing-reversal target (only used by ``tracing_reversal``).
        neighborhood_target: ``variant`` (the variant's y, as the authors' code) or ``o_false``
            (always o_false, as the paper's printed formula) for the neighborhood score.
        noise_std: σ of the fact-forcing subject noise (``tracing/noise.json``).
        seed: master seed; the noise seed is derived from (seed, case_id).
    """
    check_variant(variant)
    rw = record["requested_rewrite"]
    cid = int(record["case_id"])
    o_true, o_false = rw["target_true"]["str"].strip(), rw["target_new"]["str"].strip()
    if variant == EI:
        target = o_false
    elif variant == TR:
        if not isinstance(o_noise, str) or not o_noise.strip():
            raise ValueError(f"case_id {cid}: tracing_reversal needs an o_noise")
        target = str(o_noise).strip()
    else:
        target = o_true
    contrast = o_true if target != o_true else o_false
    if neighborhood_target not in ("variant", "o_false"):
        raise ValueError(
            f"editing.neighborhood_target must be 'variant' or 'o_false', got {neighborhood_target!r}"
        )
    forcing = variant == FF
    if forcing and (noise_std is None or noise_std <= 0):
        raise ValueError(f"case_id {cid}: fact_forcing needs a positive noise_std")
    return {
        "case_id": cid,
        "variant": variant,
        "subject": rw["subject"],
        "prompt": rw["prompt"],
        "true_object": o_true,
        "false_object": o_false,
        "target": target,
        "contrast": contrast,
        "neighborhood_target": target if neighborhood_target == "variant" else o_false,
        "minimize": variant == FE,
        "noised": forcing,
        "noise_std": float(noise_std) if forcing else None,
        "noise_seed": derived_seed(seed, cid, FF) if forcing else None,
        "paraphrase_prompts": list(record.get("paraphrase_prompts", [])),
        "neighborhood_prompts": list(record.get("neighborhood_prompts", [])),
    }


def noise_rows(tokenizer: PreTrainedTokenizerBase, subject: str) -> int:
    """Rows of the fact-forcing noise matrix: enough for the subject in any context."""
    n = max(
        len(tokenizer(subject, add_special_tokens=False)["input_ids"]),
        len(tokenizer(" " + subject, add_special_tokens=False)["input_ids"]),
    )
    return n + NOISE_ROW_SLACK


def case_noise(case: dict, tokenizer: PreTrainedTokenizerBase, d_model: int) -> torch.Tensor | None:
    """The fixed ``[n_tokens, d_model]`` subject noise of a fact-forcing case (else ``None``).

    The same matrix is used for editing and for the pre- and post-edit evaluation, like the
    authors' ``RandomState(1)`` draws.
    """
    if not case["noised"]:
        return None
    n = noise_rows(tokenizer, case["subject"])
    return subject_noise(d_model, n, float(case["noise_std"]), int(case["noise_seed"]))


def build_request(
    case: dict, tokenizer: PreTrainedTokenizerBase, d_model: int
) -> EditRequest:
    """The :class:`EditRequest` of a case (the noise is regenerated from its seed)."""
    return EditRequest(
        case_id=int(case["case_id"]),
        prompt=case["prompt"],
        subject=case["subject"],
        target=case["target"],
        minimize=bool(case["minimize"]),
        noise=case_noise(case, tokenizer, d_model),
    )
