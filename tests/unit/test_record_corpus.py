"""A corpus of malformed datasets: each is rejected with a message naming the record (its
case_id, else its position) and the field at fault, never with a bare KeyError/TypeError.

The workflow-level tests (tests/workflow/test_bad_inputs.py) run a few of these through
Snakemake against a finished run; here every defect class is checked on the loader/validator.
"""

from __future__ import annotations

import copy
import json

import pytest

from locedit.data.records import (
    LengthLimits,
    RecordError,
    load_records,
    validate_records,
)
from tests.conftest import FIXTURES


def _rw(rec):
    return rec["requested_rewrite"]


#: (id, mutation of record #2 (case_id 2), text the error must contain after "case_id 2: "
#: or, for id problems, after "record #2: ").
RECORD_DEFECTS = [
    ("no-subject", lambda r: _rw(r).pop("subject"), "requested_rewrite.subject: missing"),
    ("subject-int", lambda r: _rw(r).update(subject=7), "requested_rewrite.subject: missing, empty or not a string"),
    ("subject-blank", lambda r: _rw(r).update(subject="  "), "requested_rewrite.subject"),
    ("no-slot", lambda r: _rw(r).update(prompt="no slot here"), "exactly one '{}' slot"),
    ("two-slots", lambda r: _rw(r).update(prompt="{} and {} are"), "exactly one '{}' slot"),
    ("named-field", lambda r: _rw(r).update(prompt="{subject} speaks"), "exactly one '{}' slot"),
    ("positional-field", lambda r: _rw(r).update(prompt="{0} speaks"), "exactly one '{}' slot"),
    ("unbalanced", lambda r: _rw(r).update(prompt="{} speaks {"), "not a valid template"),
    ("format-spec", lambda r: _rw(r).update(prompt="{:>10} speaks"), "exactly one '{}' slot"),
    ("prompt-list", lambda r: _rw(r).update(prompt=["{} is"]), "requested_rewrite.prompt: missing or not a string"),
    ("no-rewrite", lambda r: r.pop("requested_rewrite"), "requested_rewrite: missing or not an object"),
    ("rewrite-str", lambda r: r.update(requested_rewrite="x"), "requested_rewrite: missing or not an object"),
    ("true-null", lambda r: _rw(r)["target_true"].update(str=None), "requested_rewrite.target_true.str"),
    ("new-blank", lambda r: _rw(r)["target_new"].update(str="  "), "requested_rewrite.target_new.str"),
    ("new-missing", lambda r: _rw(r).pop("target_new"), "requested_rewrite.target_new.str"),
    ("new-is-str", lambda r: _rw(r).update(target_new="English"), "requested_rewrite.target_new.str"),
    ("new-equals-true", lambda r: _rw(r)["target_new"].update(str=_rw(r)["target_true"]["str"]), "equals target_true"),
    ("relation-null", lambda r: _rw(r).update(relation_id=None), "requested_rewrite.relation_id"),
    ("no-paraphrases", lambda r: r.pop("paraphrase_prompts"), "paraphrase_prompts: missing"),
    ("paraphrases-str", lambda r: r.update(paraphrase_prompts="x"), "paraphrase_prompts: must be a list"),
    ("neighbour-int", lambda r: r.update(neighborhood_prompts=["a", 3]), "neighborhood_prompts: must be a list"),
    ("attribute-null", lambda r: r.update(attribute_prompts=None), "attribute_prompts: must be a list"),
    ("alias-blank", lambda r: r.update(alias_prompts=["Dani is", " "]), "alias_prompts: must be a list"),
    ("description-str", lambda r: r.update(description_prompts="x"), "description_prompts: must be a list"),
    ("reverse-no-slot", lambda r: r.update(reverse_prompts=["The best speaker is"]), "reverse_prompts[0] 'The best speaker is' must contain exactly one '{}'"),
    ("reverse-not-list", lambda r: r.update(reverse_prompts="The best {} is"), "reverse_prompts: must be a list of templates"),
    ("subject-not-in-tokens", lambda r: _rw(r).update(subject=" "), "requested_rewrite.subject"),
]

ID_DEFECTS = [
    ("id-string", lambda r: r.update(case_id="2"), "case_id must be a JSON integer, got str '2'"),
    ("id-float", lambda r: r.update(case_id=2.0), "case_id must be a JSON integer, got float 2.0"),
    ("id-bool", lambda r: r.update(case_id=True), "case_id must be a JSON integer, got bool"),
    ("id-negative", lambda r: r.update(case_id=-2), "case_id must be in [0, 2**63)"),
    ("id-huge", lambda r: r.update(case_id=2**64), "case_id must be in [0, 2**63)"),
    ("id-nan", lambda r: r.update(case_id=float("nan")), "case_id must be a JSON integer, got float"),
    ("id-missing", lambda r: r.pop("case_id"), "missing key 'case_id'"),
]


@pytest.mark.parametrize("name, mutate, message", RECORD_DEFECTS, ids=[d[0] for d in RECORD_DEFECTS])
def test_record_defect_is_named(counterfact_records, tiny_tokenizer, name, mutate, message):
    records = copy.deepcopy(counterfact_records)
    mutate(records[2])
    with pytest.raises(RecordError) as err:
        validate_records(records, tiny_tokenizer, source="data.json")
    text = str(err.value)
    assert "in data.json" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("case_id 2:"))
    assert message in line, text
    assert "case_id 0" not in text and "case_id 1:" not in text  # only the bad record is named


@pytest.mark.parametrize("name, mutate, message", ID_DEFECTS, ids=[d[0] for d in ID_DEFECTS])
def test_bad_case_id_is_named_by_position(counterfact_records, name, mutate, message):
    records = copy.deepcopy(counterfact_records)
    mutate(records[2])
    with pytest.raises(RecordError) as err:
        validate_records(records)
    assert f"record #2: {message}" in str(err.value)


def test_ids_must_be_unique_as_integers(counterfact_records):
    # 1004 and "1004" would become the same integer downstream (one edit reused for the other).
    records = copy.deepcopy(counterfact_records)
    records[1]["case_id"], records[3]["case_id"] = 1004, "1004"
    with pytest.raises(RecordError, match=r"record #3: case_id must be a JSON integer"):
        validate_records(records)
    records[3]["case_id"] = 1004
    with pytest.raises(RecordError, match=r"case_id 1004: duplicate case_id \(records #1 and #3\)"):
        validate_records(records)


def test_record_that_is_not_an_object(counterfact_records):
    records = copy.deepcopy(counterfact_records) + ["just a string", 5, None]
    with pytest.raises(RecordError) as err:
        validate_records(records)
    for pos, kind in ((5, "str"), (6, "int"), (7, "NoneType")):
        assert f"record #{pos}: is a JSON {kind}, not an object" in str(err.value)


def test_every_problem_listed_at_once(counterfact_records):
    records = copy.deepcopy(counterfact_records)
    _rw(records[0]).pop("subject")
    records[4]["paraphrase_prompts"] = None
    with pytest.raises(RecordError) as err:
        validate_records(records)
    assert str(err.value).startswith("2 problem(s)")


def test_empty_list_and_non_list():
    with pytest.raises(RecordError, match="no records"):
        validate_records([])
    with pytest.raises(RecordError, match="expected a JSON list"):
        validate_records({"case_id": 0})


def test_prompt_longer_than_the_context(counterfact_records, tiny_tokenizer):
    records = copy.deepcopy(counterfact_records)
    validate_records(records, tiny_tokenizer, LengthLimits(n_ctx=128, generate=36))
    _rw(records[2])["prompt"] = "word " * 100 + "{} speaks"
    with pytest.raises(RecordError) as err:
        validate_records(records, tiny_tokenizer, LengthLimits(n_ctx=128, generate=36))
    assert "case_id 2: requested_rewrite.prompt:" in str(err.value)
    assert "exceed the model's context of 128" in str(err.value)
    records = copy.deepcopy(counterfact_records)
    records[1]["neighborhood_prompts"].append("word " * 200)
    with pytest.raises(RecordError, match=r"case_id 1: neighborhood_prompts\[\d+\]: \d+ tokens"):
        validate_records(records, tiny_tokenizer, LengthLimits(n_ctx=128))


FILE_DEFECTS = [
    ("empty", b"", "the file is empty"),
    ("blank", b"  \n", "the file is empty"),
    ("truncated", b'[{"case_id": 0, "requested_rewrite": {"prompt": "{} is"', "not valid JSON"),
    ("not-utf8", b'[{"case_id": 0, "x": "\xff\xfe"}]', "not UTF-8 text (byte"),
    ("object", b'{"case_id": 0}', "expected a JSON list of CounterFact records, got a dict"),
]


@pytest.mark.parametrize("name, content, message", FILE_DEFECTS, ids=[d[0] for d in FILE_DEFECTS])
def test_unreadable_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / "records.json"
    path.write_bytes(content)
    with pytest.raises(RecordError) as err:
        load_records(path, "counterfact")
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "records.json"
    path.write_bytes(b"\xef\xbb\xbf" + (FIXTURES / "counterfact_sample_5.json").read_bytes())
    assert len(load_records(path, "counterfact")) == 5


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match="cannot read"):
        load_records(tmp_path / "nope.json", "counterfact")


ZSRE_DEFECTS = [
    ("no-answers", lambda r: r.pop("answers"), "zsRE record #1: missing key 'answers'"),
    ("answers-empty", lambda r: r.update(answers=[]), "zsRE record #1: answers must be a non-empty list"),
    ("answers-str", lambda r: r.update(answers="x"), "zsRE record #1: answers must be a non-empty list"),
    ("subject-int", lambda r: r.update(subject=3), "zsRE record #1: subject must be a non-empty string"),
    ("no-src", lambda r: r.pop("src"), "zsRE record #1: missing key 'src'"),
    ("loc-int", lambda r: r.update(loc=3), "zsRE record #1: loc must be"),
]


@pytest.mark.parametrize("name, mutate, message", ZSRE_DEFECTS, ids=[d[0] for d in ZSRE_DEFECTS])
def test_zsre_defects_are_named(tmp_path, name, mutate, message):
    raw = json.loads((FIXTURES / "zsre_mend_eval_sample_5.json").read_text())
    mutate(raw[1])
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordError) as err:
        load_records(path, "zsre")
    assert message in str(err.value)


def test_zsre_entry_not_an_object(tmp_path):
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps([["a"]]))
    with pytest.raises(RecordError, match="zsRE record #0: is a JSON list, not an object"):
        load_records(path, "zsre")


def test_real_samples_pass(tiny_tokenizer):
    for fmt, name in (("counterfact", "counterfact_sample_5.json"), ("zsre", "zsre_mend_eval_sample_5.json")):
        validate_records(load_records(FIXTURES / name, fmt), tiny_tokenizer,
                         LengthLimits(n_ctx=1024, generate=36))
