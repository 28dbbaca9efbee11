"""Two presets with different worlds, run one after the other, both stay up to date (their
worlds and toys live under keys of their settings); statistics made for another model are
refused by planning."""

from __future__ import annotations

import json
import re

import pytest

from tests.workflow.helpers import write_config
from tests.workflow.runs import dry_run_jobs, dry_run_listing, run, study_config

#: A toy that trains in seconds (the question here is where artefacts go, not what they hold).
TINY_TOY = {"n_layer": 2, "n_embd": 32, "n_head": 2, "steps": 20, "eval_limit": 0}


def _preset(name: str, n_filler: int) -> dict:
    cfg = study_config()
    cfg["model"]["name"] = name
    cfg["toy_model"].update(TINY_TOY)
    cfg["world"]["n_filler"] = n_filler
    cfg["editing"]["layers"] = [0, 1]
    return cfg


@pytest.mark.slow
def test_presets_with_different_worlds_both_stay_up_to_date(tmp_path):
    presets = {"toy-a": _preset("toy-a", 100), "toy-b": _preset("toy-b", 50)}
    paths = {name: write_config(tmp_path, cfg).rename(tmp_path / f"{name}.yaml") for name, cfg in presets.items()}
    for name, path in paths.items():
        run(tmp_path, "--cores", "2", f"results/{name}/synthetic/records.json", configfile=path)
    assert len(list((tmp_path / "resources/models").iterdir())) == 2
    assert len(list((tmp_path / "resources/world").iterdir())) == 2
    for name, path in paths.items():
        assert dry_run_jobs(tmp_path, "--cores", "2", f"results/{name}/synthetic/records.json",
                            configfile=path) == {}, name


def test_statistics_made_for_another_model_are_refused(tmp_path):
    cfg_path = write_config(tmp_path, study_config())
    (job,) = [j for j in dry_run_listing(tmp_path, "--cores", "1", configfile=cfg_path)
              if j["rule"] == "compute_layer_stats"]
    planned = re.search(r"resources/stats/[^/]+", job["output"]).group(0)
    other = {"key": planned.rsplit("/", 1)[1], "model": {"source": "hub", "id": "gpt2-xl"}, "dtype": "float32"}
    for directory, key, cfg in (
        (planned, "editing.stats", study_config()),
        ("elsewhere", "editing.stats.rome_npz_dir", study_config()),
    ):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
        (tmp_path / directory / "manifest.json").write_text(json.dumps({"identity": other}))
        if directory == "elsewhere":
            (tmp_path / planned / "manifest.json").unlink()
            cfg["editing"]["stats"]["rome_npz_dir"] = "elsewhere"
        proc = run(tmp_path, "-n", "--cores", "1", configfile=write_config(tmp_path, cfg), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, key
        assert f"{key}: the statistics in {directory} were made for another model" in out, out[-2000:]
