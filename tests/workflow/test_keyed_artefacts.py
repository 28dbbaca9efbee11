"""One study never rewrites another's model: shared artefacts keyed by what made them, a
validation report replaced only by a passing input, and a provenance record checked by planning.

The scenarios run on private copies of the study run (the default study) and, for two presets
with different worlds, on a toy small enough to train in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from locedit import provenance
from locedit.files import file_sha256
from tests.workflow.helpers import REPO, write_config
from tests.workflow.runs import (
    RESULTS, STUDY_RUN_TESTS, dry_run_jobs, run, study_config, study_run, toy_dir, world_dir,
)

pytestmark = STUDY_RUN_TESTS

FIXTURE = REPO / "tests" / "fixtures" / "counterfact_sample_5.json"


@pytest.fixture
def finished(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the finished study run."""
    workdir = tmp_path / "run"
    shutil.copytree(study_run(tmp_path_factory), workdir, symlinks=True)
    return workdir


def _started(text: str) -> set[str]:
    import re

    return set(re.findall(r"^(?:local)?rule (\w+):$", text, flags=re.MULTILINE)) - {"all"}


def test_study_records_what_it_ran_on(finished):
    record = json.loads((finished / RESULTS / "provenance.json").read_text())
    config = json.loads(json.dumps(record["config"]))
    assert record["config_sha256"] == provenance.digest(config, 64)
    assert record["study"] == {"model": "toy", "dataset": "synthetic"}
    toy = toy_dir(finished)
    assert record["artefacts"]["model"] == toy.relative_to(finished).as_posix()
    assert record["model_files"] == provenance.model_files(toy) and "model.safetensors" in record["model_files"]
    assert record["identity"]["model"]["key"] == toy.name.removeprefix("toy-")
    world = finished / record["artefacts"]["world"]
    assert record["dataset_sha256"] == file_sha256(world / "records.json")
    assert (finished / record["artefacts"]["stats"] / "manifest.json").is_file()
    assert record["software"]["torch"] and record["software"]["transformers"]
    # the toy says what made it, and where its world is (the one-fact API finds its corpus there)
    made_from = json.loads((toy / "made_from.json").read_text())
    assert made_from["model"] == record["identity"]["model"]
    assert made_from["world_dir"] == record["artefacts"]["world"]


def test_another_dataset_with_the_toy_leaves_the_default_study_up_to_date(finished):
    cfg = study_config()
    cfg["dataset"].update(name="mine", source="path", path=str(FIXTURE), limit=5)
    proc = run(finished, "--cores", "2", "results/toy/mine/records.json",
               configfile=write_config(finished, cfg))
    out = proc.stdout + proc.stderr
    assert _started(out) == {"validate_inputs", "publish_validation", "prepare_records"}, out[-3000:]
    assert len(list((finished / "resources" / "models").iterdir())) == 1  # the one toy, untouched
    write_config(finished, study_config())
    assert dry_run_jobs(finished, "--cores", "2", configfile=finished / "config.yaml") == {}


def test_rejected_file_under_the_study_s_name_leaves_it_up_to_date(finished):
    published = (finished / RESULTS / "validation.json").read_bytes()
    records = json.loads(FIXTURE.read_text())
    records[1]["requested_rewrite"]["prompt"] = "{subject} speaks"
    bad = finished / "bad.json"
    bad.write_text(json.dumps(records))
    cfg = study_config()
    cfg["dataset"].update(source="path", path=str(bad))  # the good study's own dataset name
    proc = run(finished, "--cores", "2", configfile=write_config(finished, cfg), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "requested_rewrite.prompt" in out
    assert _started(out) == {"validate_inputs"}
    assert (finished / RESULTS / "validation.json").read_bytes() == published
    write_config(finished, study_config())
    assert dry_run_jobs(finished, "--cores", "2", configfile=finished / "config.yaml") == {}


def test_another_model_under_the_study_s_model_name_is_refused_by_planning(finished):
    cfg = study_config()
    cfg["world"]["n_filler"] = 90
    proc = run(finished, "-n", "--cores", "2", configfile=write_config(finished, cfg), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"model.name: {RESULTS} holds the results of another model" in out
    assert "settings.world.n_filler: 100 -> 90" in out


def test_changed_model_files_are_flagged_by_planning(finished):
    """A local model directory overwritten in place (a fine-tune saved over the original): the
    results made from it no longer describe it, and planning says so."""
    model = finished / "my_model"
    shutil.copytree(toy_dir(finished), model)
    cfg = study_config()
    cfg["model"].update(name="mine", source=str(model))
    cfg["dataset"]["limit"] = 5
    cfg["editing"]["stats"]["corpus"] = str(world_dir(finished) / "corpus.txt")  # a real model's
    run(finished, "--cores", "2", "results/mine/synthetic/records.json",
        configfile=write_config(finished, cfg))
    assert dry_run_jobs(finished, "--cores", "2", "results/mine/synthetic/records.json",
                        configfile=finished / "config.yaml") == {}
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    proc = run(finished, "-n", "--cores", "2", configfile=finished / "config.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"model.source: 1 file(s) of {model} changed since results/mine/synthetic" in out
    assert "model.safetensors" in out
