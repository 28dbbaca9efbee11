"""Loaders and validation: real CounterFact/zsRE files load, and every malformed record is named."""

import copy
import json

import pytest

from locedit.data.records import (
    RecordError,
    convert_zsre,
    load_records,
    subject_token_range,
    validate_records,
)
from tests.conftest import FIXTURES


def test_counterfact_sample_loads_and_validates(tiny_tokenizer):
    records = load_records(FIXTURES / "counterfact_sample_5.json", "counterfact")
    assert [r["case_id"] for r in records] == [0, 1, 2, 3, 4]
    validate_records(records, tiny_tokenizer)


def test_subject_range_covers_exactly_the_subject(tiny_tokenizer, counterfact_records):
    for rec in counterfact_records:
        rw = rec["requested_rewrite"]
        start, end = subject_token_range(tiny_tokenizer, rw["prompt"], rw["subject"])
        ids = tiny_tokenizer(rw["prompt"].format(rw["subject"]))["input_ids"]
        assert tiny_tokenizer.decode(ids[start:end]).strip() == rw["subject"]


def test_subject_range_uses_the_slot_not_an_earlier_mention(tiny_tokenizer):
    start, _ = subject_token_range(tiny_tokenizer, "Paris is nice. {} is in", "Paris")
    assert start > 0


def test_zsre_conversion(tiny_tokenizer):
    raw = json.loads((FIXTURES / "zsre_mend_eval_sample_5.json").read_text())
    records = convert_zsre(raw, seed=0)
    assert records == convert_zsre(raw, seed=0)  # seeded target_new
    validate_records(records, tiny_tokenizer)
    rec = records[0]
    rw = rec["requested_rewrite"]
    assert rw["prompt"] == "Question: What university did {} attend? Answer:"
    assert rw["target_true"]["str"] == raw[0]["answers"][0]
    assert rw["target_new"]["str"] != rw["target_true"]["str"]
    assert rec["paraphrase_prompts"] == [f"Question: {raw[0]['rephrase']} Answer:"]
    assert rec["neighborhood_prompts"][0].startswith("Question: who played desmond")


def test_zsre_drops_questions_without_subject(caplog):
    raw = json.loads((FIXTURES / "zsre_mend_eval_sample_5.json").read_text())
    raw[1]["subject"] = "Nobody Here"
    ids = [r["case_id"] for r in convert_zsre(raw)]
    assert 1 not in ids and len(ids) == len(raw) - 1
    assert "indices [1]" in caplog.text


def test_bare_slot_prompt_is_valid(counterfact_records, tiny_tokenizer):
    # A bare "{}" prompt is odd but valid (the malformed cases are in test_record_corpus.py).
    records = copy.deepcopy(counterfact_records)
    records[2]["requested_rewrite"]["prompt"] = "{}"
    validate_records(records, tiny_tokenizer)


def test_duplicate_case_id(counterfact_records):
    counterfact_records[3]["case_id"] = 1
    with pytest.raises(RecordError, match="case_id 1: duplicate case_id"):
        validate_records(counterfact_records)


def test_unlocatable_subject(counterfact_records, tiny_tokenizer):
    # An empty-width subject cannot be found among the tokens.
    counterfact_records[0]["requested_rewrite"]["subject"] = " "
    with pytest.raises(RecordError, match="case_id 0"):
        validate_records(counterfact_records, tiny_tokenizer)
