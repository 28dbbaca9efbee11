"""Edit-success metrics as pure formulas on pre-/post-edit probabilities (paper-spec §7).

Normalised scores (Hase et al. §3.4), each in [0, 1], 1 = best:

* rewrite / paraphrase, maximisation: ``recovered = 1 - (1 - post) / (1 - pre)`` floored at
  :data:`RECOVERED_FLOOR` (the authors' code; negative changes become ≈ 0);
* rewrite / paraphrase, fact erasure: ``erased = max(0, (pre - post) / pre)``, the fraction of the
  original probability removed (authors' code; the paper prints only the objective);
* neighborhood: ``1 - |post - pre| / (0.5 + |pre - 0.5|)`` (the denominator is the largest
  possible absolute change, ``max(pre, 1 - pre)``);
* overall: the arithmetic mean of rewrite, paraphrase and neighborhood (paper; the code's CSV
  ``target_score`` is a harmonic mean, see paper-spec §15 item 19);
* essence: ``1 - clip(ppl_post - ppl_pre, 0, cap) / cap`` with cap 5 (App. B).

Unscaled metrics (Meng et al., ROME §3.3) compare the target ``y`` with a contrast object ``b``:
success is ``p(y) > p(b)`` (``p(b) > p(y)`` for erasure), magnitude the signed difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: The authors' floor of the recovered fraction (``evaluate.py``).
RECOVERED_FLOOR = 2e-8


def recovered_fraction(pre: float, post: float) -> float:
    """Improvement of ``p`` as a fraction of the largest possible one, floored at 2e-8."""
    if pre >= 1.0:  # nothing left to gain; an unchanged certainty counts as complete
        return 1.0 if post >= 1.0 else RECOVERED_FLOOR
    return max(RECOVERED_FLOOR, 1.0 - (1.0 - post) / (1.0 - pre))


def erased_fraction(pre: float, post: float) -> float:
    """Fraction of the original probability removed, ``max(0, (pre - post) / pre)``."""
    if pre <= 0.0:
        return 0.0
    return max(0.0, (pre - post) / pre)


def target_score(pre: float, post: float, *, minimize: bool) -> float:
    """Rewrite/paraphrase score of one prompt: erased fraction for erasure, else recovered."""
    return erased_fraction(pre, post) if minimize else recovered_fraction(pre, post)


def neighborhood_score(pre: float, post: float) -> float:
    """``1 - |post - pre| / max(pre, 1 - pre)``: 1 = unchanged, 0 = maximal change."""
    return 1.0 - abs(post - pre) / (0.5 + abs(pre - 0.5))


def essence_score(ppl_pre: float, ppl_post: float, *, cap: float = 5.0) -> float:
    """``1 - clip(Δppl, 0, cap) / cap``: 1 = no perplexity increase, 0 = increase ≥ cap."""
    if cap <= 0:
        raise ValueError(f"editing.essence.cap must be > 0, got {cap}")
    return 1.0 - float(np.clip(ppl_post - ppl_pre, 0.0, cap)) / cap


def aggregate(
    pre: Sequence[float],
    post: Sequence[float],
    score_fn,
    how: str = "mean",
) -> tuple[float, float, float]:
    """``(score, mean pre, mean post)`` over prompts; ``how='first'`` keeps prompt 0 only (code).

    The score is the mean of per-prompt scores (not the score of mean probabilities). An empty
    prompt list gives NaNs.
    """
    if how not in ("mean", "first"):
        raise ValueError(f"editing.paraphrase_aggregation must be 'mean' or 'first', got {how!r}")
    pre, post = list(pre), list(post)
    if len(pre) != len(post):
        raise ValueError(f"{len(pre)} pre-edit but {len(post)} post-edit probabilities")
    if not pre:
        return float("nan"), float("nan"), float("nan")
    if how == "first":
        pre, post = pre[:1], post[:1]
    scores = [score_fn(a, b) for a, b in zip(pre, post)]
    return float(np.mean(scores)), float(np.mean(pre)), float(np.mean(post))


def unscaled(
    p_target: Sequence[float], p_contrast: Sequence[float], *, target_wins: bool = True
) -> tuple[float, float]:
    """ROME's ``(success rate, mean magnitude)`` on one prompt family.

    Args:
        p_target / p_contrast: post-edit probabilities of the two objects on each prompt.
        target_wins: success is ``p_target > p_contrast`` (else the reverse); the magnitude is the
            mean difference in the same direction.
    """
    a = np.asarray(p_target, dtype=np.float64)
    b = np.asarray(p_contrast, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    diff = a - b if target_wins else b - a
    return float(np.mean(diff > 0)), float(np.mean(diff))


def overall_score(rewrite: float, paraphrase: float, neighborhood: float) -> float:
    """Arithmetic mean of the three edit scores, ignoring a missing (NaN) family."""
    vals = [v for v in (rewrite, paraphrase, neighborhood) if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def edit_scores(
    case: dict,
    pre: dict[str, dict[str, list[float]]],
    post: dict[str, dict[str, list[float]]],
    ppl_pre: float,
    ppl_post: float,
    *,
    aggregation: str = "mean",
    cap: float = 5.0,
) -> dict[str, float]:
    """Every metric of one edit from pre-/post-edit probe probabilities (one results row).

    Args:
        case: the case (``minimize``, see :mod:`locedit.editing.variants`).
        pre / post: ``{family: {role: [p per prompt]}}`` from
            :func:`locedit.editing.evaluate.probe_probabilities`.
        aggregation: ``mean`` over all paraphrase/neighborhood prompts (paper) or ``first``
            prompt only (authors' code).
        cap: the essence perplexity-increase cap.
    """
    minimize = bool(case["minimize"])

    def tgt(pr, po):
        return target_score(pr, po, minimize=minimize)

    row: dict[str, float] = {}
    for fam, role, fn in (
        ("rewrite", "target", tgt),
        ("paraphrase", "target", tgt),
        ("neighborhood", "nbr", neighborhood_score),
    ):
        score, p0, p1 = aggregate(
            pre[fam].get(role, []), post[fam].get(role, []), fn, aggregation
        )
        row[f"{fam}_score"], row[f"{fam}_pre"], row[f"{fam}_post"] = score, p0, p1
    row["overall_score"] = overall_score(
        row["rewrite_score"], row["paraphrase_score"], row["neighborhood_score"]
    )
    row["essence_ppl_pre"], row["essence_ppl_post"] = float(ppl_pre), float(ppl_post)
    row["essence_score"] = (
        essence_score(ppl_pre, ppl_post, cap=cap)
        if ppl_pre == ppl_pre and ppl_post == ppl_post  # not NaN
        else float("nan")
    )
    # ROME's unscaled metrics on the post-edit model. Efficacy/paraphrase: does y beat b (b beat y
    # for erasure)? Neighborhood: do the neighbours still prefer the true object o_true over the
    # other object of the pair?
    for fam, name in (("rewrite", "efficacy"), ("paraphrase", "paraphrase")):
        succ, mag = unscaled(
            post[fam].get("target", []), post[fam].get("contrast", []), target_wins=not minimize
        )
        row[f"{name}_success"], row[f"{name}_magnitude"] = succ, mag
    target_is_true = case["target"] == case["true_object"]
    succ, mag = unscaled(
        post["neighborhood"].get("target", []),
        post["neighborhood"].get("contrast", []),
        target_wins=target_is_true,
    )
    row["neighborhood_success"], row["neighborhood_magnitude"] = succ, mag
    return row


#: Generation-based columns of ``edits.parquet`` (:func:`generation_scores`).
GEN_COLUMNS = [
    "gen_rewrite_pre", "gen_rewrite_post", "gen_rewrite_score",
    "gen_paraphrase_pre", "gen_paraphrase_post", "gen_paraphrase_score",
    "gen_neighborhood_pre", "gen_neighborhood_post", "gen_neighborhood_score",
]  # fmt: skip


#: Generation-based outcome metrics of the analysis -> their edits.parquet columns, and labels.
GEN_METRICS = {"gen_rewrite": "gen_rewrite_score", "gen_paraphrase": "gen_paraphrase_score",
               "gen_neighborhood": "gen_neighborhood_score"}  # fmt: skip
GEN_LABELS = {"gen_rewrite": "Rewrite generated", "gen_paraphrase": "Paraphrase generated",
              "gen_neighborhood": "Neighborhood generation kept"}  # fmt: skip


def generation_scores(
    case: dict, pre: dict[str, dict[str, list[bool]]], post: dict[str, dict[str, list[bool]]]
) -> dict[str, float]:
    """Does the model *generate* the answer, not only rank it? (The "Mirage of Model Editing",
    Yang et al. 2025: teacher-forced scores overstate what an edited model says.)

    ``pre`` / ``post``: per family and role, whether greedy decoding from each prompt produces
    the whole role's target (every target token the argmax given the prompt and the target
    tokens before it: exactly when greedy generation starts with the target;
    :func:`locedit.editing.evaluate.probe_probabilities` with ``greedy=True``). Columns:

    * ``gen_{rewrite,paraphrase}_{pre,post}``: the share of the family's prompts whose greedy
      continuation is the edit's target; ``gen_neighborhood_{pre,post}``: the share of
      neighbourhood prompts whose continuation is the neighbourhood target;
    * ``gen_{rewrite,paraphrase}_score``: success after the edit, the post share (one minus it
      for fact erasure, whose edit removes the target); ``gen_neighborhood_score``: the share of
      neighbourhood prompts whose continuation the edit left as it was (the target produced
      before and after, or neither).
    """
    minimize = bool(case["minimize"])
    row: dict[str, float] = {}
    for fam, role in (("rewrite", "target"), ("paraphrase", "target"), ("neighborhood", "nbr")):
        before = np.asarray(pre.get(fam, {}).get(role, []), dtype=float)
        after = np.asarray(post.get(fam, {}).get(role, []), dtype=float)
        if after.size == 0 or before.size != after.size:
            row.update({f"gen_{fam}_{k}": float("nan") for k in ("pre", "post", "score")})
            continue
        row[f"gen_{fam}_pre"], row[f"gen_{fam}_post"] = float(before.mean()), float(after.mean())
        if fam == "neighborhood":
            row[f"gen_{fam}_score"] = float((before == after).mean())
        else:
            row[f"gen_{fam}_score"] = 1.0 - float(after.mean()) if minimize else float(after.mean())
    return row


def flag_collapse(edits: pd.DataFrame, essence_ppl_ratio: float = 2.0) -> pd.DataFrame:
    """``edits`` with ``essence_ppl_ratio`` (post/pre essence perplexity) and ``collapsed``
    (ratio >= ``essence_ppl_ratio``; False where the ratio is undefined) appended.

    Model collapse (Gupta et al. 2024) is an edit after which the model stops producing sensible
    text; the essence texts, sampled from the unedited model about the subject but not the
    edited relation, are the text every edit is scored on whose likelihood the edit should not
    move, so their perplexity ratio is the measure.
    """
    out = edits.copy()
    out["essence_ppl_ratio"] = (out["essence_ppl_post"] / out["essence_ppl_pre"]).astype("float64")
    out["collapsed"] = (out["essence_ppl_ratio"] >= float(essence_ppl_ratio)).astype("bool")
    return out
