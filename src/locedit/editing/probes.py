"""Generalisation probes: did an edit change the fact, or the continuation of the subject's tokens?

The post on ROME's limits (``../shared/papers/004``) shows by hand that a ROME edit of
``(s, r, o -> y)`` (1) works only when s's own tokens are in the prompt, (2) is one-directional
and (3) can over-reach. Every edit is probed on five extra prompt families, scored in the same
teacher-forced batch as the paper's metrics (:mod:`locedit.editing.evaluate`), pre- and post-edit:

==================  ==========================================  ========  ===================
family              prompts                                     answer    comes from
==================  ==========================================  ========  ===================
``alias``           the fact through the subject's alias        o → y     ``alias_prompts``
``description``     through a description, two hops             o → y     ``description_prompts``
``reverse_new``     the reverse template filled with y          s         ``reverse_prompts``
``reverse_old``     the reverse template filled with o          s         ``reverse_prompts``
``other_subjects``  other subjects' facts of the same relation   neither   the dataset's records
``generic``         generic prompts naming the subject          neither   ``editing.probes``
==================  ==========================================  ========  ===================

Scores (columns of ``edits.parquet``; the prompt-level means like the paper's metrics):

* ``alias_score`` / ``description_score``: the rewrite score (:func:`target_score`) of y on the
  route's prompts, only those the model answers with o, greedily, before the edit (``*_n``).
* ``reverse_score``: the recovered fraction of p(s | reverse prompt with y), the new fact in the
  reverse direction, and ``reverse_persistence`` = 1 - erased fraction of p(s | reverse prompt
  with o), how much of the old fact survives in the reverse direction; both only on reverse
  prompts the model completes with s before the edit (``reverse_n``).
* ``overreach_{other_subjects,generic}``: mean over prompts of p_post(y) - p_pre(o), how much more
  often the new object turns up where neither object is the answer than the old object did
  before the edit; ``*_rate`` the fraction of prompts where p_post(y) > p_pre(o).

Alias and description probes run for every problem but fact forcing (its edit holds under a
noised subject only, which a route without the subject's tokens cannot carry); reverse and
over-reach probes only where the edit's target differs from the true object (error injection,
tracing reversal). A missing family scores NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from locedit.editing.metrics import aggregate, erased_fraction, recovered_fraction, target_score

#: Probe families, in the order their rows are scored.
FAMILIES = ("alias", "description", "reverse_new", "reverse_old", "other_subjects", "generic")
#: Families whose answer is the subject (role ``subject``); the others have roles ``new`` (y)
#: and ``old`` (o).
SUBJECT_FAMILIES = ("reverse_new", "reverse_old")
ROUTES = ("alias", "description")
OVERREACH = ("other_subjects", "generic")

#: Regression outcomes of the probes (analysis ``METRICS`` entries) and their columns.
PROBE_METRICS = {
    "alias": "alias_score",
    "description": "description_score",
    "reverse": "reverse_score",
    "reverse_persistence": "reverse_persistence",
    "overreach_subjects": "overreach_other_subjects",
    "overreach_generic": "overreach_generic",
}

#: Display labels of :data:`PROBE_METRICS`.
PROBE_LABELS = {
    "alias": "Alias",
    "description": "Description (2-hop)",
    "reverse": "Reverse",
    "reverse_persistence": "Reverse old kept",
    "overreach_subjects": "Over-reach, others",
    "overreach_generic": "Over-reach, generic",
}

#: Every column :func:`probe_scores` writes (NaN where a family is missing).
COLUMNS = (
    *(f"{f}_{c}" for f in ROUTES for c in ("score", "pre", "post", "n")),
    "reverse_score", "reverse_pre", "reverse_post", "reverse_n",
    "reverse_persistence", "reverse_old_pre", "reverse_old_post",
    *(f"overreach_{f}{c}" for f in OVERREACH for c in ("", "_rate", "_new_post", "_old_pre")),
)  # fmt: skip


def other_subjects_index(records: Sequence[dict]) -> dict[str, list[tuple[str, str, str]]]:
    """``relation_id -> [(subject, filled requested prompt, true object)]`` in file order."""
    index: dict[str, list[tuple[str, str, str]]] = {}
    for r in records:
        rw = r["requested_rewrite"]
        entry = (
            rw["subject"],
            rw["prompt"].format(rw["subject"]),
            rw["target_true"]["str"].strip(),
        )
        index.setdefault(str(rw["relation_id"]), []).append(entry)
    return index


def case_probes(
    record: dict,
    case: dict,
    others: dict[str, list[tuple[str, str, str]]],
    *,
    other_subjects: int,
    generic_prompts: Sequence[str],
) -> dict[str, list[str]] | None:
    """The probe prompts of ``case`` (``{family: [prompt]}``), ``None`` for fact forcing.

    Args:
        record: the case's record (optional fields ``alias_prompts``, ``description_prompts``,
            ``reverse_prompts``).
        others: :func:`other_subjects_index` of the whole dataset.
        other_subjects: at most this many prompts about other subjects of the relation whose
            true object is neither o nor y (first in file order).
        generic_prompts: templates whose ``{}`` takes the subject.
    """
    if case["noised"]:
        return None
    subject, o, y = case["subject"], case["true_object"], case["target"]
    probes = {
        "alias": list(record.get("alias_prompts") or []),
        "description": list(record.get("description_prompts") or []),
    }
    rewrites = y != o
    reverse = list(record.get("reverse_prompts") or []) if rewrites else []
    probes["reverse_new"] = [t.format(y) for t in reverse]
    probes["reverse_old"] = [t.format(o) for t in reverse]
    relation = str(record["requested_rewrite"]["relation_id"])
    pool = [p for s, p, t in others.get(relation, []) if s != subject and t not in (o, y)]
    probes["other_subjects"] = pool[:other_subjects] if rewrites else []
    probes["generic"] = [t.format(subject) for t in generic_prompts] if rewrites else []
    return probes


def probe_rows(case: dict) -> list[tuple[str, str, int, str, str]]:
    """Rows ``(family, role, prompt index, prompt, target)`` of the case's probes (none without)."""
    probes = case.get("probes") or {}
    rows = []
    for fam in FAMILIES:
        if fam in SUBJECT_FAMILIES:
            roles = {"subject": case["subject"]}
        else:
            roles = {"new": case["target"], "old": case["true_object"]}
        for role, target in roles.items():
            for i, prompt in enumerate(probes.get(fam, [])):
                rows.append((fam, role, i, prompt, target))
    return rows


def _kept(values: list[float], keep: list[int]) -> list[float]:
    return [values[i] for i in keep]


def probe_scores(
    case: dict,
    pre: dict[str, dict[str, list[float]]],
    post: dict[str, dict[str, list[float]]],
    greedy: dict[str, dict[str, list[bool]]] | None,
) -> dict[str, float]:
    """The probe columns of one edit (:data:`COLUMNS`, see the module docstring).

    Args:
        pre / post: probe probabilities (:func:`locedit.editing.evaluate.probe_probabilities`).
        greedy: pre-edit greedy hits of the same rows (``None``: the case has no probes).
    """
    row = dict.fromkeys(COLUMNS, float("nan"))
    if greedy is None:
        return row

    def get(probs, fam, role):
        return list(probs.get(fam, {}).get(role, []))

    def tgt(a, b):
        return target_score(a, b, minimize=bool(case["minimize"]))

    for fam in ROUTES:
        keep = [i for i, hit in enumerate(get(greedy, fam, "old")) if hit]
        score, p0, p1 = aggregate(
            _kept(get(pre, fam, "new"), keep), _kept(get(post, fam, "new"), keep), tgt
        )
        row.update(
            {f"{fam}_score": score, f"{fam}_pre": p0, f"{fam}_post": p1, f"{fam}_n": len(keep)}
        )
    keep = [i for i, hit in enumerate(get(greedy, "reverse_old", "subject")) if hit]
    if get(pre, "reverse_new", "subject"):
        score, p0, p1 = aggregate(
            _kept(get(pre, "reverse_new", "subject"), keep),
            _kept(get(post, "reverse_new", "subject"), keep),
            recovered_fraction,
        )
        kept, q0, q1 = aggregate(
            _kept(get(pre, "reverse_old", "subject"), keep),
            _kept(get(post, "reverse_old", "subject"), keep),
            lambda a, b: 1.0 - erased_fraction(a, b),
        )
        row.update(
            {"reverse_score": score, "reverse_pre": p0, "reverse_post": p1, "reverse_n": len(keep),
             "reverse_persistence": kept, "reverse_old_pre": q0, "reverse_old_post": q1}
        )  # fmt: skip
    for fam in OVERREACH:
        new_post = np.asarray(get(post, fam, "new"), dtype=np.float64)
        old_pre = np.asarray(get(pre, fam, "old"), dtype=np.float64)
        if new_post.size:
            row[f"overreach_{fam}"] = float(np.mean(new_post - old_pre))
            row[f"overreach_{fam}_rate"] = float(np.mean(new_post > old_pre))
            row[f"overreach_{fam}_new_post"] = float(np.mean(new_post))
            row[f"overreach_{fam}_old_pre"] = float(np.mean(old_pre))
    return row
