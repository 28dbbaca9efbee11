"""Bad input through Snakemake on a directory that holds a finished run: the error names the
record or key, no model job runs, and every result of the good run stays as it was.

The defect classes are covered one by one on the validators (tests/unit/test_record_corpus.py,
test_config_checks.py); these runs check the workflow wiring: validation first, model rules
behind it, planning-time checks before anything is scheduled, params compared by value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.workflow.helpers import reverse_mappings, write_config
from tests.workflow.runs import (
    TARGETS,
    dry_run_jobs,
    study_config,
    study_run,
    run,
    STUDY_RUN_TESTS,
    world_dir,
)

pytestmark = STUDY_RUN_TESTS

@pytest.fixture
def finished(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the finished reference run."""
    workdir = tmp_path / "run"
    shutil.copytree(study_run(tmp_path_factory), workdir, symlinks=True)
    return workdir


def results_digest(workdir: Path) -> dict[str, str]:
    return {
        p.relative_to(workdir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((workdir / "results").rglob("*"))
        if p.is_file()  # the published validation report too: a rejected input leaves it
    }


def started_rules(text: str) -> set[str]:
    """Rules of the jobs Snakemake started (the "rule X:" headers it prints)."""
    return set(re.findall(r"^(?:local)?rule (\w+):$", text, flags=re.MULTILINE)) - {"all"}


def test_bad_record_file_is_named_and_costs_nothing(finished):
    before = results_digest(finished)
    records = json.loads((world_dir(finished) / "records.json").read_text())
    records[1]["requested_rewrite"]["prompt"] = "{subject} speaks"
    records[3]["case_id"] = str(records[2]["case_id"])
    bad = finished / "bad_records.json"
    bad.write_text(json.dumps(records))
    cfg = study_config()
    cfg["dataset"].update(source="path", path=str(bad))  # same dataset name as the good run
    proc = run(finished, "--cores", "2", *TARGETS, configfile=write_config(finished, cfg),
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"case_id {records[1]['case_id']}: requested_rewrite.prompt" in out
    assert "record #3: case_id must be a JSON integer" in out
    assert started_rules(out) == {"validate_inputs"}, started_rules(out)
    assert results_digest(finished) == before


def test_token_replacement_without_a_second_subject_is_named(finished):
    """Symmetric token replacement needs another subject of the dataset: a file with one
    subject is refused by validation, naming the runs, before any model job."""
    before = results_digest(finished)
    records = json.loads((world_dir(finished) / "records.json").read_text())[:3]
    for r in records:
        r["requested_rewrite"]["subject"] = records[0]["requested_rewrite"]["subject"]
    one = finished / "one_subject.json"
    one.write_text(json.dumps(records))
    cfg = study_config()
    cfg["dataset"].update(name="one", source="path", path=str(one))
    cfg["tracing"]["runs"] = [*cfg["tracing"]["runs"], {"kind": "mlp_str", "window": 1}]
    proc = run(finished, "--cores", "2", *TARGETS, configfile=write_config(finished, cfg), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "tracing.runs: mlp_str replace each fact's subject by another subject of the dataset" in out
    assert started_rules(out) == {"validate_inputs"}, started_rules(out)
    assert results_digest(finished) == before


def test_config_mistakes_stop_at_planning(finished):
    before = results_digest(finished)
    cfg = study_config()
    cfg["editing"]["layers"] = [1, 14]
    cfg["analysis"]["window"] = 7
    proc = run(finished, "--cores", "2", *TARGETS, configfile=write_config(finished, cfg),
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "editing.layers: layer(s) [14] outside the model's 12 layers" in out
    assert "analysis.window: mlp/7" in out
    assert started_rules(out) == set()
    assert results_digest(finished) == before


def test_key_order_does_not_rerun(finished):
    cfg = reverse_mappings(copy.deepcopy(study_config()))
    path = finished / "reordered.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert list(yaml.safe_load(path.read_text())) != list(study_config())
    assert dry_run_jobs(finished, "--cores", "1", *TARGETS, configfile=path) == {}


def test_model_that_knows_too_few_facts_stops_after_the_filter(finished):
    before = {k: v for k, v in results_digest(finished).items() if "/tracing" in k or "/editing" in k}
    cfg = study_config()
    cfg["tracing"]["only_correct"] = True
    cfg["filter"] = {"min_known": 10_000}
    proc = run(finished, "--cores", "2", *TARGETS, configfile=write_config(finished, cfg),
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "needs at least 10000 (filter.min_known)" in out
    assert started_rules(out) <= {"validate_inputs", "filter_known_facts"}
    after = results_digest(finished)
    assert {k: v for k, v in after.items() if k in before} == before
