"""CounterFact-format records: loading, zsRE conversion, validation and subject location.

Every dataset (the built-in fact world, CounterFact, zsRE) is turned into the CounterFact record
shape before anything else sees it::

    {"case_id": int,
     "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                           "relation_id": "P103", "target_true": {"str": "French"},
                           "target_new": {"str": "English"}},
     "paraphrase_prompts": [...], "neighborhood_prompts": [...], "attribute_prompts": [...]}

zsRE (``zsre_mend_eval.json``) conversion, following the authors' code (paper-spec §2.3):
prompt ``"Question: {src with the subject replaced by {}} Answer:"``, ``target_true = answers[0]``,
``target_new`` = the answer of another record drawn with a seeded RNG, paraphrase
``"Question: {rephrase} Answer:"``, neighborhood ``"Question: {loc without 'nq question: '}? Answer:"``,
``relation_id = "zsre"``, ``case_id`` = position in the file. Questions that do not contain their
subject verbatim cannot be traced; they are dropped with a warning naming each index.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from locedit.scoring import encode_prompt

logger = logging.getLogger(__name__)


class RecordError(ValueError):
    """One or more records are malformed; the message names each ``case_id`` and problem."""


def load_counterfact(path: str | Path) -> list[dict]:
    """Records of a CounterFact JSON file (a list of records), in file order."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of CounterFact records")
    return data


def convert_zsre(raw: Sequence[dict], *, seed: int = 0) -> list[dict]:
    """Convert ``zsre_mend_eval`` entries to CounterFact-shaped records (see module docstring)."""
    rng = np.random.default_rng(seed)
    answers = [r["answers"][0] for r in raw]
    out, dropped = [], []
    for i, r in enumerate(raw):
        subject, question = r["subject"], r["src"]
        if subject not in question:
            dropped.append(i)
            continue
        others = [a for a in answers if a != answers[i]]
        new = others[int(rng.integers(len(others)))] if others else answers[i]
        loc = r.get("loc", "").replace("nq question: ", "").strip()
        out.append(
            {
                "case_id": i,
                "requested_rewrite": {
                    "prompt": "Question: " + question.replace(subject, "{}", 1) + " Answer:",
                    "subject": subject,
                    "relation_id": "zsre",
                    "target_true": {"str": answers[i]},
                    "target_new": {"str": new},
                },
                "paraphrase_prompts": [f"Question: {r['rephrase']} Answer:"],
                "neighborhood_prompts": [f"Question: {loc}? Answer:"] if loc else [],
                "attribute_prompts": [],
            }
        )
    if dropped:
        logger.warning(
            "zsRE: dropped %d question(s) not containing their subject verbatim (indices %s)",
            len(dropped),
            dropped[:50],
        )
    return out


def load_zsre(path: str | Path, *, seed: int = 0) -> list[dict]:
    return convert_zsre(json.loads(Path(path).read_text()), seed=seed)


def load_records(path: str | Path, fmt: str, *, seed: int = 0) -> list[dict]:
    """Load ``path`` in ``fmt`` (``counterfact`` or ``zsre``) as CounterFact-shaped records."""
    if fmt == "counterfact":
        return load_counterfact(path)
    if fmt == "zsre":
        return load_zsre(path, seed=seed)
    raise ValueError(f"dataset.format must be 'counterfact' or 'zsre', got {fmt!r}")


def subject_token_range(
    tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str
) -> tuple[int, int]:
    """Token span ``[start, end)`` of ``subject`` in ``prompt.format(subject)``.

    Uses character offsets, so it works for any fast tokenizer (BPE or SentencePiece), and
    picks the ``{}`` slot, not an earlier accidental occurrence of the subject's text.

    Raises:
        ValueError: the prompt has no ``{}`` or no token overlaps the subject.
    """
    if "{}" not in prompt:
        raise ValueError(f"prompt {prompt!r} has no '{{}}' slot for the subject")
    char_start = prompt.index("{}")
    char_end = char_start + len(subject)
    text = prompt.format(subject)
    enc = tokenizer(text, return_offsets_mapping=True)
    toks = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < char_end and b > char_start
    ]
    if not toks:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    return toks[0], toks[-1] + 1


def _get(record: dict, dotted: str):
    cur = record
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise KeyError(dotted)
        cur = cur[key]
    return cur


REQUIRED_KEYS = (
    "case_id",
    "requested_rewrite.prompt",
    "requested_rewrite.subject",
    "requested_rewrite.relation_id",
    "requested_rewrite.target_true.str",
    "requested_rewrite.target_new.str",
    "paraphrase_prompts",
    "neighborhood_prompts",
)


def record_problems(record: dict, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """Problems of one record (empty when valid). With a tokenizer, also locate the subject."""
    problems = []
    for key in REQUIRED_KEYS:
        try:
            _get(record, key)
        except KeyError:
            problems.append(f"missing key {key!r}")
    if problems:
        return problems
    rw = record["requested_rewrite"]
    if not isinstance(rw["prompt"], str) or rw["prompt"].count("{}") != 1:
        problems.append(f"requested_rewrite.prompt {rw['prompt']!r} must contain '{{}}' once")
    if not str(rw["subject"]).strip():
        problems.append("empty requested_rewrite.subject")
    for key in ("target_true", "target_new"):
        if not str(rw[key]["str"]).strip():
            problems.append(f"empty requested_rewrite.{key}.str")
    for key in ("paraphrase_prompts", "neighborhood_prompts"):
        if not isinstance(record[key], list) or not all(isinstance(p, str) for p in record[key]):
            problems.append(f"{key} must be a list of strings")
    if tokenizer is not None and not problems:
        try:
            subject_token_range(tokenizer, rw["prompt"], rw["subject"])
        except ValueError as err:
            problems.append(str(err))
    return problems


def validate_records(
    records: Iterable[dict], tokenizer: PreTrainedTokenizerBase | None = None
) -> None:
    """Raise :class:`RecordError` naming every bad record (by ``case_id``) and its problem."""
    errors, seen = [], set()
    for pos, record in enumerate(records):
        cid = record.get("case_id", f"<record #{pos} without case_id>")
        for problem in record_problems(record, tokenizer):
            errors.append(f"case_id {cid}: {problem}")
        if "case_id" in record:
            if cid in seen:
                errors.append(f"case_id {cid}: duplicate case_id")
            seen.add(cid)
    if errors:
        shown = "\n  ".join(errors[:50])
        more = f"\n  … and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise RecordError(f"{len(errors)} problem(s) in the dataset:\n  {shown}{more}")


def flat_fact(record: dict) -> dict:
    """The scalar fields of a record used in every results table."""
    rw = record["requested_rewrite"]
    return {
        "case_id": int(record["case_id"]),
        "subject": rw["subject"],
        "prompt": rw["prompt"],
        "relation_id": str(rw["relation_id"]),
        "target_true": rw["target_true"]["str"],
        "target_new": rw["target_new"]["str"],
    }


def prompt_ids_with_subject(
    tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str
) -> tuple[list[int], tuple[int, int]]:
    """``(ids of prompt.format(subject), subject token range)``."""
    return encode_prompt(tokenizer, prompt.format(subject)), subject_token_range(
        tokenizer, prompt, subject
    )
