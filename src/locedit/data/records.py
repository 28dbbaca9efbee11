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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

import numpy as np
from transformers import PreTrainedTokenizerBase

from locedit.scoring import encode_prompt, encode_prompt_target
from locedit.validation import problem_report

logger = logging.getLogger(__name__)


class RecordError(ValueError):
    """One or more records are malformed; the message names each ``case_id`` and problem."""


def read_json(path: str | Path):
    """The JSON value in ``path``; :class:`RecordError` naming the file (and where) when it is
    missing, empty, not UTF-8 or not JSON."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is allowed
    except OSError as err:
        raise RecordError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    if not text.strip():
        raise RecordError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "truncated?"
        ) from None


def load_counterfact(path: str | Path) -> list:
    """Records of a CounterFact JSON file (a list of records), in file order, unvalidated."""
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(
            f"{path}: expected a JSON list of CounterFact records, got a {type(data).__name__}"
        )
    return data


#: zsRE fields: name -> (required, kind); kind "str" or "list" (of non-empty strings).
ZSRE_FIELDS = {"src": (True, "str"), "subject": (True, "str"), "answers": (True, "list"),
               "rephrase": (True, "str"), "loc": (False, "str")}


def zsre_problems(raw) -> list[str]:
    """Problems of ``zsre_mend_eval`` entries (by position) that would stop the conversion."""
    if not isinstance(raw, list):
        return [f"expected a JSON list of zsRE records, got a {type(raw).__name__}"]
    if not raw:
        return ["no records (the study needs at least one)"]
    problems = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            problems.append(f"zsRE record #{i}: is a JSON {type(r).__name__}, not an object")
            continue
        for key, (required, kind) in ZSRE_FIELDS.items():
            if key not in r:
                if required:
                    problems.append(f"zsRE record #{i}: missing key {key!r}")
                continue
            v = r[key]
            ok = (isinstance(v, str) and (bool(v.strip()) or not required)) if kind == "str" else (
                isinstance(v, list) and bool(v) and all(isinstance(a, str) and a.strip() for a in v))
            if not ok:
                what = "a non-empty string" if kind == "str" else "a non-empty list of strings"
                problems.append(f"zsRE record #{i}: {key} must be {what}")
    return problems


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
    """``zsre_mend_eval`` entries of ``path``, checked and converted to CounterFact records."""
    raw = read_json(path)
    raise_record_problems(zsre_problems(raw), str(path))
    return convert_zsre(raw, seed=seed)


def load_known(path: str | Path, *, seed: int = 0, limit: int | None = None) -> list[dict]:
    """ROME's known facts in ``path``, checked and converted to CounterFact records
    (:mod:`locedit.data.known`); the first ``limit``."""
    from locedit.data.known import convert_known, known_problems

    raw = read_json(path)
    raise_record_problems(known_problems(raw, limit), str(path))
    return convert_known(raw, seed=seed, limit=limit)


#: ``dataset.format`` values and their loaders.
FORMATS = ("counterfact", "zsre", "known")


def load_records(path: str | Path, fmt: str, *, seed: int = 0, limit: int | None = None) -> list[dict]:
    """Load the first ``limit`` records (all: None) of ``path`` in ``fmt`` (:data:`FORMATS`) as
    CounterFact-shaped records."""
    if fmt == "counterfact":
        return load_counterfact(path)[:limit]
    if fmt == "zsre":
        return load_zsre(path, seed=seed)[:limit]
    if fmt == "known":
        return load_known(path, seed=seed, limit=limit)
    raise ValueError(f"dataset.format must be one of {FORMATS}, got {fmt!r}")


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


#: Record fields that are lists of prompt strings: required, and optional (CounterFact has both).
PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts")
OPTIONAL_PROMPT_LISTS = (
    "attribute_prompts", "generation_prompts", "alias_prompts", "description_prompts",
)  # fmt: skip
#: Optional lists of templates whose one ``{}`` slot takes an object and whose answer is the
#: subject (the generalisation probes' reverse direction, :mod:`locedit.data.routes`).
OPTIONAL_TEMPLATE_LISTS = ("reverse_prompts",)


@dataclass(frozen=True)
class LengthLimits:
    """Token budgets a record must fit (prompt lengths are checked against the model's context).

    Attributes:
        n_ctx: the model's context length.
        generate: tokens generated after the requested prompt (the known-fact filter's
            ``filter.max_new_tokens``; it also covers the few tokens of a ROME/MEMIT context
            template put before the prompt).
    """

    n_ctx: int
    generate: int = 0


def _nonempty_str(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _template_problem(prompt: str) -> str | None:
    """Why ``prompt`` is not a template with exactly one ``{}`` slot (None when it is)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(prompt) if name is not None]
    except ValueError as err:  # unbalanced braces
        return f"is not a valid template ({err}); write literal braces as {{{{ }}}}"
    if fields != [("", "", None)]:
        return "must contain exactly one '{}' slot and no other {...} field"
    return None


def _rewrite_problems(rw) -> list[str]:
    if not isinstance(rw, dict):
        return ["requested_rewrite: missing or not an object"]
    problems = []
    prompt = rw.get("prompt")
    if not isinstance(prompt, str):
        problems.append("requested_rewrite.prompt: missing or not a string")
    elif (why := _template_problem(prompt)) is not None:
        problems.append(f"requested_rewrite.prompt {prompt!r} {why}")
    if not _nonempty_str(rw.get("subject")):
        problems.append("requested_rewrite.subject: missing, empty or not a string")
    if not (_nonempty_str(rw.get("relation_id")) or type(rw.get("relation_id")) is int):
        problems.append("requested_rewrite.relation_id: missing or not a string")
    for key in ("target_true", "target_new"):
        target = rw.get(key)
        if not isinstance(target, dict) or not _nonempty_str(target.get("str")):
            problems.append(f"requested_rewrite.{key}.str: missing, empty or not a string")
    if not problems and rw["target_true"]["str"].strip() == rw["target_new"]["str"].strip():
        problems.append("requested_rewrite.target_new.str equals target_true.str (nothing to edit)")
    return problems


def _token_problems(record: dict, tokenizer, limits: LengthLimits | None) -> list[str]:
    rw = record["requested_rewrite"]
    try:
        subject_token_range(tokenizer, rw["prompt"], rw["subject"])
    except ValueError as err:
        return [str(err)]
    if limits is None:
        return []
    longest_target = max(
        len(encode_prompt_target(tokenizer, "", rw[k]["str"])[1]) for k in ("target_true", "target_new")
    )
    problems = []
    fact = len(encode_prompt(tokenizer, rw["prompt"].format(rw["subject"])))
    need = fact + max(limits.generate, longest_target)
    if need > limits.n_ctx:
        problems.append(
            f"requested_rewrite.prompt: {fact} tokens + {need - fact} generated/target "
            f"tokens exceed the model's context of {limits.n_ctx}"
        )
    # Reverse prompts are answered by the subject, filled with either target.
    reverse_templates = record.get("reverse_prompts") or []
    subject_len = (
        len(encode_prompt_target(tokenizer, "", rw["subject"])[1]) if reverse_templates else 0
    )
    reverse = [
        (t.format(rw[k]["str"]), subject_len)
        for t in reverse_templates
        for k in ("target_true", "target_new")
    ]
    checks = [
        (key, [(prompt, longest_target) for prompt in record.get(key) or []])
        for key in PROMPT_LISTS + OPTIONAL_PROMPT_LISTS
    ]
    for key, prompts in checks + [("reverse_prompts", reverse)]:
        for i, (prompt, answer_len) in enumerate(prompts):
            n = len(encode_prompt(tokenizer, prompt)) + answer_len
            if n > limits.n_ctx:
                problems.append(
                    f"{key}[{i}]: {n} tokens with its target exceed the context of {limits.n_ctx}"
                )
    return problems


def record_problems(
    record, tokenizer: PreTrainedTokenizerBase | None = None, limits: LengthLimits | None = None
) -> list[str]:
    """Problems of one record (empty when valid), each naming the field at fault.

    Checks every field's type and shape; with a tokenizer also that the subject is found among the
    prompt's tokens and, with ``limits``, that every prompt fits the model's context.
    """
    if not isinstance(record, dict):
        return [f"is a JSON {type(record).__name__}, not an object (a CounterFact record)"]
    problems = _rewrite_problems(record.get("requested_rewrite"))
    for key in PROMPT_LISTS + OPTIONAL_PROMPT_LISTS:
        if key not in record and key in PROMPT_LISTS:
            problems.append(f"{key}: missing (a list of prompt strings, possibly empty)")
        elif key in record and (
            not isinstance(record[key], list) or not all(_nonempty_str(p) for p in record[key])
        ):
            problems.append(f"{key}: must be a list of non-empty strings")
    for key in OPTIONAL_TEMPLATE_LISTS:
        if key not in record:
            continue
        if not isinstance(record[key], list):
            problems.append(f"{key}: must be a list of templates with one '{{}}' slot for an object")
            continue
        for i, template in enumerate(record[key]):
            if not isinstance(template, str):
                problems.append(f"{key}[{i}]: not a string")
            elif (why := _template_problem(template)) is not None:
                problems.append(f"{key}[{i}] {template!r} {why}")
    if tokenizer is not None and not problems:
        problems += _token_problems(record, tokenizer, limits)
    return problems


def _case_id_problem(cid) -> str | None:
    if type(cid) is not int:  # bool is an int subclass; "1004" and 1004.0 are not ids
        return f"must be a JSON integer, got {type(cid).__name__} {cid!r}"
    if not 0 <= cid < 2**63:  # the results tables store it as int64
        return f"must be in [0, 2**63), got {cid}"
    return None


def validate_records(
    records,
    tokenizer: PreTrainedTokenizerBase | None = None,
    limits: LengthLimits | None = None,
    *,
    source: str = "the dataset",
) -> None:
    """Raise :class:`RecordError` naming every bad record and its problem.

    Records are named by ``case_id`` (by position when the id itself is bad); ids must be
    non-negative integers and unique; an empty list is an error.
    """
    if not isinstance(records, list):
        raise RecordError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise RecordError(f"{source}: no records (the study needs at least one)")
    errors: list[str] = []
    seen: dict[int, int] = {}
    for pos, record in enumerate(records):
        name = f"record #{pos}"
        if isinstance(record, dict):
            if "case_id" not in record:
                errors.append(f"{name}: missing key 'case_id'")
            elif (why := _case_id_problem(record["case_id"])) is not None:
                errors.append(f"{name}: case_id {why}")
            else:
                cid = record["case_id"]
                name = f"case_id {cid}"
                if cid in seen:
                    errors.append(f"{name}: duplicate case_id (records #{seen[cid]} and #{pos})")
                seen.setdefault(cid, pos)
        errors += [f"{name}: {problem}" for problem in record_problems(record, tokenizer, limits)]
    raise_record_problems(errors, source)


def raise_record_problems(problems: list[str], source: str, shown: int = 50) -> None:
    """Raise :class:`RecordError` listing ``problems`` (the first ``shown``); no-op when empty."""
    if problems:
        raise RecordError(problem_report(problems, source, shown))


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
