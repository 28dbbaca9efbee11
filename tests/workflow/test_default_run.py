"""The default pipeline, run through Snakemake itself on the reduced config, produces a world in
CounterFact format, a toy model loadable like any hub model, and the known-fact table."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from locedit.modeling import load_model
from locedit.data.records import validate_records
from locedit.scoring import contains_target
from tests.workflow.runs import reference_run

RESULTS = "results/toy/synthetic"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return reference_run(tmp_path_factory)


def test_world_and_toy_model(run_dir):
    model, tok = load_model(str(run_dir / "resources/models/toy"), device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel"
    records = json.loads((run_dir / "resources/world/records.json").read_text())
    validate_records(records, tok)  # every subject locatable with the trained tokenizer
    assert (run_dir / "resources/world/corpus.txt").stat().st_size > 0


def test_records_are_the_first_limit_records(run_dir):
    world = json.loads((run_dir / "resources/world/records.json").read_text())
    records = json.loads((run_dir / RESULTS / "records.json").read_text())
    assert records == world[: len(records)] and len(records) == 12


def test_facts_table(run_dir):
    facts = pd.read_parquet(run_dir / RESULTS / "facts.parquet")
    records = json.loads((run_dir / RESULTS / "records.json").read_text())
    assert list(facts["case_id"]) == [r["case_id"] for r in records]
    for col in ["case_id", "subject", "prompt", "relation_id", "target_true", "target_new",
                "p_true", "p_new", "is_correct", "erasure_eligible"]:
        assert col in facts
    assert facts["p_true"].between(0, 1).all()
    assert (facts["erasure_eligible"] == (facts["p_true"] >= 0.02)).all()
    # Correctness is the paper's criterion on the stored greedy continuation. (The shared
    # reference run trains the toy model for a few steps only, so it need not know any fact;
    # how much the default toy model knows is measured by train_toy_model into
    # resources/models/toy/metrics.json and reported in the README.)
    assert list(facts["is_correct"]) == [
        contains_target(c, t) for c, t in zip(facts["continuation"], facts["target_true"])
    ]
