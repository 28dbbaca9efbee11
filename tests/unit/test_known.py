"""ROME's known facts as CounterFact records (dataset.format: known): the construction the
module docstring documents, on the shipped file and on small hand-made files, and each defect
named by its known_id."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from locedit.data.known import MAX_PARAPHRASES, MAX_PROMPTS, convert_known, known_problems
from locedit.data.records import RecordError, load_records, validate_records

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "known_1000.json"


def _fact(kid, subject, attribute, prompt, rel="P1"):
    return {"known_id": kid, "subject": subject, "attribute": attribute, "template": "",
            "prediction": "", "prompt": prompt, "relation_id": rel}


SMALL = [
    _fact(0, "Paris", "France", "Paris is located in the country of"),
    _fact(1, "Lyon", "France", "The city of Lyon lies in"),
    _fact(2, "Berlin", "Germany", "Berlin is located in the country of"),
    _fact(3, "Rome", "Italy", "Rome, a city in"),
    _fact(4, "Danielle Darrieux", "French", "The mother tongue of Danielle Darrieux is", "P103"),
    _fact(5, "Leo Tolstoy", "Russian", "Leo Tolstoy is a native speaker of", "P103"),
]


def test_construction_on_a_small_file():
    recs = convert_known(SMALL, seed=3)
    by_id = {r["case_id"]: r for r in recs}
    paris = by_id[0]
    rw = paris["requested_rewrite"]
    assert rw["prompt"] == "{} is located in the country of"
    assert rw["target_true"]["str"] == "France" and rw["relation_id"] == "P1"
    assert rw["target_new"]["str"] in {"Germany", "Italy"}  # another object of the relation
    # the relation's other prompt templates, filled with this subject, first-seen order
    assert paris["paraphrase_prompts"] == ["The city of Paris lies in", "Paris, a city in"]
    # other subjects with the same true object, each through its own prompt
    assert paris["neighborhood_prompts"] == ["The city of Lyon lies in"]
    # subjects whose true object is the new target
    expected_attr = {"Germany": ["Berlin is located in the country of"], "Italy": ["Rome, a city in"]}
    assert paris["attribute_prompts"] == expected_attr[rw["target_new"]["str"]]
    tolstoy = by_id[5]["requested_rewrite"]
    assert tolstoy["target_new"]["str"] == "French"  # the only other object of P103
    assert by_id[5]["neighborhood_prompts"] == []  # fewer where the file has fewer
    validate_records(recs)


def test_targets_are_seeded_per_fact_and_independent_of_the_limit():
    full = convert_known(SMALL, seed=1)
    assert full == convert_known(SMALL, seed=1)
    cut = convert_known(SMALL, seed=1, limit=2)
    assert cut == full[:2]
    draws = {convert_known(SMALL, seed=s)[0]["requested_rewrite"]["target_new"]["str"] for s in range(20)}
    assert draws == {"Germany", "Italy"}  # the seed matters, uniformly over the candidates


def test_shipped_file_converts_with_capped_prompt_lists():
    recs = load_records(SHIPPED, "known", seed=0, limit=800)
    assert len(recs) == 800
    validate_records(recs)
    for r in recs:
        rw = r["requested_rewrite"]
        assert rw["target_new"]["str"] != rw["target_true"]["str"]
        assert len(r["paraphrase_prompts"]) <= MAX_PARAPHRASES
        for key in ("neighborhood_prompts", "attribute_prompts"):
            assert len(r[key]) <= MAX_PROMPTS
        assert all(rw["subject"] in p for p in r["paraphrase_prompts"])
    # the first record (Vinson Massif, continent of Antarctica) as the docstring describes it
    assert recs[0]["requested_rewrite"]["prompt"] == "{} is located in the continent of"
    assert len(recs[0]["neighborhood_prompts"]) == MAX_PROMPTS
    assert recs[0]["paraphrase_prompts"] == ["Vinson Massif belongs to the continent of",
                                             "Vinson Massif is a part of the continent of"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f[1].pop("attribute"), "known fact #1: missing key(s) ['attribute']"),
        (lambda f: f[2].update(subject="Munich"), "known_id 2: subject 'Munich' is not in its prompt"),
        (lambda f: f[3].update(known_id=1), "known_id 1: duplicate known_id (entries #1 and #3)"),
        (lambda f: f[0].update(attribute=""), "known_id 0: ['attribute'] must be non-empty strings"),
        (lambda f: f[0].update(known_id="0"), "known fact #0: known_id must be a non-negative integer"),
        (lambda f: f.append(_fact(9, "Oslo", "Oslo", "Oslo is the twin city of", "P190")),
         "known_id 9: relation P190 has no second attribute"),
    ],
    ids=["missing-field", "subject-not-in-prompt", "duplicate-id", "empty-attribute", "id-str", "unpaired"],
)
def test_bad_entries_are_named(tmp_path, mutate, message):
    facts = copy.deepcopy(SMALL)
    mutate(facts)
    path = tmp_path / "known.json"
    path.write_text(json.dumps(facts))
    with pytest.raises(RecordError) as err:
        load_records(path, "known")
    assert message in str(err.value)


def test_an_unpaired_relation_beyond_the_limit_is_no_problem():
    facts = SMALL + [_fact(9, "Oslo", "Oslo", "Oslo is the twin city of", "P190")]
    assert known_problems(facts, limit=len(SMALL)) == []
    assert known_problems(facts) != []
    # the shipped file has one such fact (P190, known_id 893)
    raw = json.loads(SHIPPED.read_text())
    assert [p.split(":")[0] for p in known_problems(raw)] == ["known_id 893"]
