"""The tuning stage (editing.tuning, off by default) on the reduced run: it writes every
candidate's scores and the chosen values per (variant, method), the edit jobs edit with the
chosen values, and changing one method's grid replans exactly that method's tuning and what
depends on it."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import yaml

from locedit.registry.rules import EDIT_RULES
from tests.workflow.runs import STUDY_RUN_TESTS, RESULTS, dry_run_listing, run, study_config, study_run, write_config

pytestmark = STUDY_RUN_TESTS

GRIDS = {"rome": {"kl_factor": [0.0625, 1.0]}, "ft-1": {"norm_constraint": [1.0e-3, 2.0e-2]}}


def test_tuning_stage_chooses_and_edit_jobs_use_the_choice(tmp_path, tmp_path_factory):
    workdir = tmp_path / "run"
    shutil.copytree(study_run(tmp_path_factory), workdir, symlinks=True)
    cfg = study_config()
    cfg["editing"]["variants"] = ["error_injection"]  # a fifth of the jobs
    cfg["editing"]["run_methods"] = ["rome", "r-rome", "ft-1"]
    cfg["editing"]["tuning"] = {"enabled": True, "n_facts": 3, "layer": 1, "grids": GRIDS,
                                "selection": {"max_rewrite": 0.99, "max_neighborhood_drop": 0.5}}  # fmt: skip
    path = write_config(workdir, cfg)
    edits = [f"{RESULTS}/edits.parquet"]
    run(workdir, "--cores", "2", *edits, "results/toy/synthetic/tuning/tuning.md", configfile=path)

    ed = cfg["editing"]
    table = pd.read_parquet(workdir / "results/toy/synthetic/tuning/candidates.parquet")
    # r-ROME is tuned as ROME (it replays ROME's edits): sections rome and ft-1, each variant
    assert set(zip(table["variant"], table["method"])) == {(v, m) for v in ed["variants"] for m in GRIDS}
    assert (table.groupby(["variant", "method"])["chosen"].sum() == 1).all()
    assert (table["n_edits"] == 3).all() and (table["layer"] == 1).all()
    for variant in ed["variants"]:
        for method in GRIDS:
            chosen = json.loads((workdir / f"results/toy/synthetic/tuning/{variant}/{method}.json").read_text())
            row = table[(table["variant"] == variant) & (table["method"] == method) & table["chosen"]]
            assert chosen["values"] == json.loads(row["values"].iloc[0])
            # the edit jobs of this cell edited with the chosen values (their log prints the hparams)
            for m in [m for m in ed["run_methods"] if (m == "r-rome" and method == "rome") or m == method]:
                log = next((workdir / "logs/edit_facts/toy/synthetic" / variant / m).rglob("*.log")).read_text()
                key, value = next(iter(chosen["values"].items()))
                assert f"'{key}': {value!r}" in log, (variant, m, chosen)

    # A new FT-1 grid replans FT-1's tuning, FT-1's edits and the aggregates; nothing of ROME's.
    changed = yaml.safe_load(path.read_text())
    changed["editing"]["tuning"]["grids"]["ft-1"] = {"norm_constraint": [1.0e-3, 5.0e-3]}
    path2 = write_config(workdir, changed)
    jobs = dry_run_listing(workdir, *edits, "results/toy/synthetic/tuning/tuning.md", configfile=path2)
    rules = {j["rule"] for j in jobs}
    assert rules <= {"tune_hparams", "collect_tuning", "collect_edits", *EDIT_RULES}, rules
    tuned = {(j["wildcards"]["variant"], j["wildcards"]["method"]) for j in jobs if j["rule"] == "tune_hparams"}
    assert tuned == {(v, "ft-1") for v in ed["variants"]}
    assert {j["wildcards"]["method"] for j in jobs if j["rule"] in EDIT_RULES} == {"ft-1"}
