"""One fact without the workflow, on the trained default toy: the Python API gives the same
metrics row as the workflow's edit job, the ``locedit`` command traces and edits, and the
example notebook runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from tests.workflow.helpers import REPO
from tests.workflow.runs import STUDY_RUN_TESTS, stats_dir, study_run, world_dir

pytestmark = STUDY_RUN_TESTS
RESULTS = "results/toy/synthetic"


@pytest.fixture(scope="module")
def study(tmp_path_factory, monkeypatch_module):
    workdir = study_run(tmp_path_factory)
    monkeypatch_module.chdir(workdir)  # load("toy") reads the toy of ./config.yaml from here
    monkeypatch_module.setenv("LOCEDIT_CACHE", str(tmp_path_factory.mktemp("locedit_cache")))
    return workdir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _first_known(study):
    facts = pd.read_parquet(study / RESULTS / "facts.parquet")
    cid = int(facts.loc[facts["is_correct"], "case_id"].iloc[0])
    records = json.loads((study / RESULTS / "records.json").read_text())
    return next(r for r in records if r["case_id"] == cid)


@pytest.mark.parametrize("method", ["rome", "ft-1"])
def test_api_edit_gives_the_workflow_s_row(study, method):
    import locedit

    rec = _first_known(study)
    rw = rec["requested_rewrite"]
    lm = locedit.load("toy", device="cpu")
    hp = locedit.config_hparams(method, "error_injection", study / "config.yaml")
    # The API samples the authors' 21 context templates and computes the statistics with its
    # own defaults (another batch size: other float32 sums); give it the workflow's, so both
    # edit with the same prerequisites.
    cache = locedit.api.cache_dir(lm)
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(study / RESULTS / "editing/context_templates.json", cache / "context_templates_seed0.json")
    corpus = (world_dir(study) / "corpus.txt").read_bytes()
    stats = cache / f"stats-{hashlib.sha256(corpus).hexdigest()[:12]}"
    if not stats.exists():
        shutil.copytree(stats_dir(study), stats)
    layer = yaml.safe_load((study / "config.yaml").read_text())["editing"]["layers"][0]
    row = locedit.edit(lm, method, layer, rw["prompt"], rw["subject"], target_new=rw["target_new"]["str"],
                       target_true=rw["target_true"]["str"], paraphrases=rec["paraphrase_prompts"],
                       neighborhood=rec["neighborhood_prompts"], hparams=hp, case_id=rec["case_id"])
    edits = pd.read_parquet(study / RESULTS / "edits.parquet")
    ours = edits[(edits.case_id == rec["case_id"]) & (edits.method == method) & (edits.layer == layer)].iloc[0]
    # The API builds the case the way prepare_edit_inputs does (same seeds: same essence texts)
    # and edits it alone in the batched engine; the study's edit jobs edit one fact per batch
    # too (editing.engine.max_facts: 1), so the two compute the same edit, and the rows agree
    # to float rounding (the probes are read from batches of other sizes).
    for col in ("rewrite_pre", "paraphrase_pre", "neighborhood_pre", "essence_ppl_pre",
                "rewrite_post", "paraphrase_post", "neighborhood_post", "essence_ppl_post",
                "rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score"):
        assert row[col] == pytest.approx(ours[col], rel=1e-5, abs=1e-7), col
    assert (row["target"], row["subject"]) == (ours["target"], ours["subject"])
    if method != "rome":
        return
    # Generalisation probes on request: scored beside the same paper metrics. Over-reach prompts:
    # other subjects of the relation whose answer is neither object, from the whole world.
    records = json.loads((world_dir(study) / "records.json").read_text())
    objects = {rw["target_true"]["str"], rw["target_new"]["str"]}
    others = [r["requested_rewrite"] for r in records if r["requested_rewrite"]["relation_id"] == rw["relation_id"]
              and r["requested_rewrite"]["target_true"]["str"] not in objects]  # fmt: skip
    probed = locedit.edit(lm, method, layer, rw["prompt"], rw["subject"], target_new=rw["target_new"]["str"],
                          target_true=rw["target_true"]["str"], paraphrases=rec["paraphrase_prompts"],
                          neighborhood=rec["neighborhood_prompts"], hparams=hp, case_id=rec["case_id"],
                          other_subjects=[o["prompt"].format(o["subject"]) for o in others[:2]],
                          generic=["{} is a"])  # fmt: skip
    assert probed["rewrite_score"] == pytest.approx(row["rewrite_score"], rel=1e-6)
    assert 0 <= probed["overreach_generic_rate"] <= 1 and probed["overreach_generic_new_post"] >= 0
    assert len(others) >= 2 and 0 <= probed["overreach_other_subjects_rate"] <= 1
    assert pd.isna(row["overreach_generic"]) and pd.isna(probed["alias_score"])


def test_api_trace_and_heatmap(study, tmp_path):
    import locedit

    rw = _first_known(study)["requested_rewrite"]
    lm = locedit.load("toy", device="cpu")
    res = locedit.trace(lm, rw["prompt"], rw["subject"], rw["target_true"]["str"], window=3, samples=4)
    assert res.restored.shape == (len(res.tokens), lm.model.config.n_layer)
    assert res.p_clean > res.p_noised
    assert res.known["known"] and res.known["rank"] >= 1 and res.known["p_target"] == pytest.approx(res.p_clean, rel=1e-4)
    fig = locedit.plot_trace(res, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "1"  # layers 1-indexed


def test_cli_trace_and_edit(study, tmp_path):
    from locedit.cli import main

    rw = _first_known(study)["requested_rewrite"]
    runner = CliRunner()
    out = tmp_path / "heat.png"
    res = runner.invoke(main, ["trace", "--model", "toy", "--device", "cpu", "--prompt", rw["prompt"],
                               "--subject", rw["subject"], "--target", rw["target_true"]["str"],
                               "--window", "3", "--samples", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "p_clean" in res.output and "peak: token" in res.output and out.exists()
    assert res.output.startswith("known: yes")
    res = runner.invoke(main, ["edit", "--model", "toy", "--device", "cpu", "--method", "ft-1",
                               "--layer", "0", "--prompt", rw["prompt"], "--subject", rw["subject"],
                               "--target-new", rw["target_new"]["str"], "--target-true",
                               rw["target_true"]["str"], "--config", "config.yaml", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["method"] == "ft-1" and row["layer"] == 0 and 0 <= row["rewrite_score"] <= 1
    assert row["known"] is True


def test_unknown_facts_are_said_to_be_unknown(study):
    """A fact the toy does not know (it continues " Polish."): the API warns and says so in the
    result and the row, the CLI in one line on stderr."""
    import locedit
    from locedit.api import UnknownFactWarning
    from locedit.cli import main

    lm = locedit.load("toy", device="cpu")
    fact = ("The mother tongue of {} is", "Danielle Darrieux", "French")
    known = locedit.knows(lm, *fact)
    assert not known["known"] and "French" not in known["continuation"] and known["rank"] > 1
    with pytest.warns(UnknownFactWarning, match="does not know this fact"):
        assert locedit.trace(lm, *fact, window=3, samples=2).known == known
    res = CliRunner().invoke(main, ["trace", "--device", "cpu", "--prompt", fact[0], "--subject",
                                    fact[1], "--target", fact[2], "--window", "3", "--samples", "2",
                                    "--out", str(study / "unknown.png")])
    assert res.exit_code == 0 and res.stdout.startswith("known: no")
    assert res.stderr.count("warning: the model does not know this fact") == 1


@pytest.mark.parametrize("change, message", [
    ({"--layer": "40"}, "Error: --layer: 40 is outside the model's 12 layers (0-11, 0-indexed)"),
    ({"--hparam": "foo=1"}, "Error: --hparam: unknown rome hyperparameter keys ['foo']"),
    ({"--hparam": "v_lr"}, "Error: --hparam: 'v_lr': expected KEY=VALUE"),
    ({"--prompt": "no slot"}, "Error: --prompt: 'no slot' needs exactly one {} where the subject goes"),
    ({"--model": "/no/such/dir"}, "Error: --model: '/no/such/dir' is neither a directory"),
])
def test_cli_mistakes_are_one_line_naming_the_flag_before_any_load(study, monkeypatch, change, message):
    from locedit import api
    from locedit.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr(api, "load", no_load)
    args = {"--method": "rome", "--layer": "1", "--prompt": "The native language of {} is",
            "--subject": "Masir Tupul", "--target-new": "Swedish", "--target-true": "French", **change}
    res = CliRunner().invoke(main, ["edit", *[x for kv in args.items() for x in kv]])
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert line.startswith(message), line


def test_console_script_is_installed():
    """The ``locedit`` command pip installs (pyproject's [project.scripts]), next to this Python."""
    exe = shutil.which("locedit", path=str(Path(sys.executable).parent)) or shutil.which("locedit")
    assert exe, "no `locedit` command on PATH: is the package installed (pip install -e .)?"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "trace" in proc.stdout and "edit" in proc.stdout


def test_example_notebook_runs(study):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "one_fact.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(study)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "p_clean" in text and "rome" in text and "ft-5" in text
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))
