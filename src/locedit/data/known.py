"""ROME's known-facts file (``known_1000.json``) as CounterFact records (``dataset.format: known``).

Each entry is ``{known_id, subject, attribute, template, prediction, prompt, relation_id}``: a
fact GPT-2 XL knew, the facts ROME's causal-tracing figures average over. CounterFact was built
from the same kind of data (ParaRel relations); the conversion follows its construction:

- ``case_id`` = ``known_id``; ``requested_rewrite.prompt`` = the entry's ``prompt`` with its
  subject replaced by ``{}`` (the full prompt: the file's ``template`` is sometimes cut short,
  "{} is located in the continent" for the prompt "... continent of"); ``target_true`` = the
  attribute.
- ``target_new``: the attribute of another fact of the same relation whose attribute differs,
  drawn uniformly with a generator seeded by ``(seed, known_id)``, so a record does not change
  when the file is cut shorter (``dataset.limit``) or the order of other records changes.
- ``paraphrase_prompts``: the relation's other prompt templates in the file (every distinct
  ``prompt`` of the relation with its own subject replaced by ``{}``, except this record's),
  filled with this subject, in first-seen order, at most :data:`MAX_PARAPHRASES` (CounterFact
  has 2 per record). CounterFact puts an unrelated sentence before each paraphrase; the known
  facts have none to take, so none here.
- ``neighborhood_prompts``: other subjects of the same relation with the same true attribute,
  each through its own prompt, in file order, at most :data:`MAX_PROMPTS` (CounterFact: 10).
- ``attribute_prompts``: subjects of the same relation whose true attribute is ``target_new``,
  each through its own prompt, at most :data:`MAX_PROMPTS`.

A relation with few facts gives fewer prompts (possibly none): counts are what the file holds.
The whole file is the pool for targets and prompts; ``dataset.limit`` then keeps the first N.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

#: Cap on the neighbourhood and attribute prompt lists (CounterFact's 10 each).
MAX_PROMPTS = 10
#: Cap on the paraphrase prompts (CounterFact's 2).
MAX_PARAPHRASES = 2

#: Fields of a known-facts entry the conversion reads.
KNOWN_FIELDS = ("known_id", "subject", "attribute", "prompt", "relation_id")


def known_problems(raw, limit: int | None = None) -> list[str]:
    """Problems of known-facts entries that stop the conversion, each naming the entry: missing
    or mistyped fields, duplicate ids, a subject not in its prompt, and (among the first
    ``limit`` entries, the ones the study uses) a relation with no second attribute to draw
    ``target_new`` from."""
    if not isinstance(raw, list):
        return [f"expected a JSON list of known facts, got a {type(raw).__name__}"]
    if not raw:
        return ["no records (the study needs at least one)"]
    problems, seen = [], {}
    for i, r in enumerate(raw):
        name = f"known fact #{i}"
        if not isinstance(r, dict):
            problems.append(f"{name}: is a JSON {type(r).__name__}, not an object")
            continue
        missing = [k for k in KNOWN_FIELDS if k not in r]
        if missing:
            problems.append(f"{name}: missing key(s) {missing}")
            continue
        kid = r["known_id"]
        if type(kid) is not int or kid < 0:
            problems.append(f"{name}: known_id must be a non-negative integer, got {kid!r}")
            continue
        name = f"known_id {kid}"
        if kid in seen:
            problems.append(f"{name}: duplicate known_id (entries #{seen[kid]} and #{i})")
        seen.setdefault(kid, i)
        bad = [k for k in ("subject", "attribute", "prompt", "relation_id")
               if not isinstance(r[k], str) or not r[k].strip()]
        if bad:
            problems.append(f"{name}: {bad} must be non-empty strings")
        elif r["subject"] not in r["prompt"]:
            problems.append(f"{name}: subject {r['subject']!r} is not in its prompt {r['prompt']!r}")
        elif "{" in r["prompt"] or "}" in r["prompt"]:
            problems.append(f"{name}: prompt {r['prompt']!r} contains a brace")
    if problems:
        return problems
    attributes = defaultdict(set)
    for r in raw:
        attributes[r["relation_id"]].add(r["attribute"].strip())
    for r in raw[:limit]:
        if len(attributes[r["relation_id"]]) < 2:
            problems.append(
                f"known_id {r['known_id']}: relation {r['relation_id']} has no second attribute in "
                "the file to draw target_new from; set dataset.limit below its position or remove it"
            )
    return problems


def convert_known(raw: Sequence[dict], *, seed: int = 0, limit: int | None = None) -> list[dict]:
    """The first ``limit`` entries of ``raw`` (checked by :func:`known_problems`) as CounterFact
    records (see the module docstring); the whole file is the pool of targets and prompts."""
    by_relation: dict[str, list[dict]] = defaultdict(list)
    for r in raw:
        by_relation[r["relation_id"]].append(r)
    templates: dict[str, list[str]] = {}
    for rel, facts in by_relation.items():
        seen: dict[str, None] = {}
        for f in facts:
            seen.setdefault(_template(f), None)
        templates[rel] = list(seen)
    out = []
    for r in raw[:limit]:
        rel, subject, true = r["relation_id"], r["subject"], r["attribute"].strip()
        facts = by_relation[rel]
        others = sorted({f["attribute"].strip() for f in facts} - {true})
        rng = np.random.default_rng([seed, r["known_id"]])
        new = others[int(rng.integers(len(others)))]
        own = _template(r)
        near = [f for f in facts if f["attribute"].strip() == true and f["subject"] != subject]
        attr = [f for f in facts if f["attribute"].strip() == new]
        out.append(
            {
                "case_id": int(r["known_id"]),
                "requested_rewrite": {
                    "prompt": own,
                    "subject": subject,
                    "relation_id": rel,
                    "target_true": {"str": true},
                    "target_new": {"str": new},
                },
                "paraphrase_prompts": [t.format(subject) for t in templates[rel] if t != own][:MAX_PARAPHRASES],
                "neighborhood_prompts": [f["prompt"] for f in near][:MAX_PROMPTS],
                "attribute_prompts": [f["prompt"] for f in attr][:MAX_PROMPTS],
            }
        )
    return out


def _template(fact: dict) -> str:
    """The fact's prompt with its (first) subject occurrence as the ``{}`` slot."""
    return fact["prompt"].replace(fact["subject"], "{}", 1)
