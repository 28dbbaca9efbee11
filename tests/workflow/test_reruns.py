"""Precise reruns: after a finished run, a config or code change replans exactly the jobs it
invalidates, asserted on dry-run job lists.

The finished run is stood in for by :func:`tests.workflow.runs.touched_tree` (provenance metadata
recorded by ``snakemake --touch``, the same records a real run leaves), so these tests take
seconds; changes are ``--configfile`` overrides merged over the run's config.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from locedit.registry.methods import METHODS
from locedit.registry.rules import EDIT_RULES
from tests.workflow.helpers import REPO
from tests.workflow import runs
from tests.workflow.runs import dry_run_listing, study_config, prepare_workdir, touched_tree

NOISE_VARIANTS = {"tracing_reversal", "fact_forcing"}  # their edit inputs come from tracing


def _rules_of(stage: str, root: Path = REPO) -> set[str]:
    text = (root / "workflow" / "rules" / f"{stage}.smk").read_text()
    return set(re.findall(r"^(?:rule|checkpoint|use rule \w+ as) (\w+)(?: with)?:", text, flags=re.M))


DATA = _rules_of("data")
TRACING = _rules_of("tracing")
EDIT_STATS = _rules_of("editing_stats") if (REPO / "workflow/rules/editing_stats.smk").exists() else set()
EDITING = _rules_of("editing")
ANALYSIS = _rules_of("analysis")
AGGREGATES = ANALYSIS | {"collect_edits", "all"}


def _effective(config: dict) -> dict:
    """The config as the workflow sees it (schema defaults filled in)."""
    from snakemake.utils import validate

    cfg = copy.deepcopy(config)
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    return cfg


def _finished(tmp_path_factory, copy_code: bool, **editing):
    """A workdir whose whole study is recorded as finished (``touched_tree``); the config and the
    full plan. ``copy_code``: against a copy of the workflow and package (the code test edits
    it), made the workflow the tests run (``runs.REPO``) for as long as the fixture lives."""
    root = tmp_path_factory.mktemp("reruns")
    if copy_code:
        for part in ("Snakefile", "workflow", "src", "profiles", "envs"):
            src = REPO / part
            if src.is_dir():
                shutil.copytree(src, root / part, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, root / part)
    workdir = root / "work"
    config = study_config()
    config["editing"].update(editing)
    cfg = prepare_workdir(workdir, config)
    old = runs.REPO
    if copy_code:
        runs.REPO = root
    try:
        full = dry_run_listing(workdir, configfile=cfg)
        touched_tree(workdir, cfg)
        yield workdir, _effective(config), full
    finally:
        runs.REPO = old


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    yield from _finished(tmp_path_factory, copy_code=True)


@pytest.fixture(scope="module", params=[None, 1], ids=["job_per_method", "job_per_layer"])
def finished_by_layers_per_job(request, tmp_path_factory):
    """The finished study with one edit job per (variant, method) over all layers, and with one
    per layer (editing.layers_per_job: 1; against the repository's own code: code hashes follow
    content, so its plans are the same under the copy)."""
    if request.param is None:
        yield request.getfixturevalue("finished")
    else:
        yield from _finished(tmp_path_factory, copy_code=False, layers_per_job=request.param)


def _replan(workdir: Path, override: dict | None = None, name: str = "") -> list[dict]:
    if override is None:
        return dry_run_listing(workdir)
    path = workdir / f"override_{name}.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return dry_run_listing(workdir, "--configfile", str(workdir / "config.yaml"), str(path))


def _edit_jobs(jobs, **match):
    return [j for j in jobs if j["rule"] in EDIT_RULES
            and all(j["wildcards"].get(k) in v for k, v in match.items())]


def _assert_only(jobs, allowed: set[str], what: str):
    unexpected = sorted({j["rule"] for j in jobs} - allowed)
    assert not unexpected, f"{what} replanned unrelated rules: {unexpected}"


def test_finished_run_plans_nothing(finished):
    workdir, _, full = finished
    assert len(full) > 10
    assert _replan(workdir) == []


def test_rome_hyperparameter_replans_only_rome_edits_and_aggregates(finished):
    workdir, config, full = finished
    rome = config["editing"]["methods"]["rome"]
    per_variant = rome.get("per_variant") or {}
    # A numeric ROME key no per-variant override shadows: every ROME job sees the change.
    key = next(k for k, v in rome.items() if k != "per_variant" and isinstance(v, (int, float))
               and not isinstance(v, bool) and not any(k in (o or {}) for o in per_variant.values()))
    new = rome[key] * 2 if rome[key] else 1
    jobs = _replan(workdir, {"editing": {"methods": {"rome": {key: new}}}}, "rome")
    _assert_only(jobs, set(EDIT_RULES) | AGGREGATES, f"editing.methods.rome.{key}")
    # ROME's jobs and those of the run methods reading ROME's section (r-ROME), nothing else
    readers = {m for m in config["editing"]["run_methods"] if METHODS[m].config_section == "rome"}
    assert {j["wildcards"]["method"] for j in _edit_jobs(jobs)} == readers
    assert len(_edit_jobs(jobs)) == len(_edit_jobs(full, method=readers))
    # ROME's jobs for their params; r-ROME's because the ROME vectors they replay will change
    assert all("Params have changed" in j["reason"] for j in _edit_jobs(jobs, method={"rome"}))
    replays = _edit_jobs(jobs, method=readers - {"rome"})
    assert replays and all("updated by another job" in j["reason"] for j in replays), [j["reason"] for j in replays]


def test_tracing_noise_replans_tracing_and_its_dependents_only(finished):
    workdir, config, full = finished
    noise = config["tracing"]["noise_std"]
    override = {"tracing": {"noise_std": (noise * 2) if noise else 0.05}}
    jobs = _replan(workdir, override, "noise")
    rules = {j["rule"] for j in jobs}
    assert "estimate_noise_level" in rules and "trace_facts" in rules
    assert not rules & (DATA | EDIT_STATS), sorted(rules & (DATA | EDIT_STATS))
    # Editing reruns only where the editing problem itself uses the noise (tracing reversal's
    # o_noise target, fact forcing's sigma); the other problems' edits are untouched.
    touched = {j["wildcards"]["variant"] for j in _edit_jobs(jobs)}
    assert touched <= NOISE_VARIANTS, (
        f"tracing noise replanned edits of {sorted(touched - NOISE_VARIANTS)}, which do not use it"
    )
    # ... and every edit job of those that do (an empty plan must not pass).
    users = NOISE_VARIANTS & set(config["editing"]["variants"])
    assert users and touched == users, touched
    assert len(_edit_jobs(jobs)) == len(_edit_jobs(full, variant=users))
    _assert_only(jobs, TRACING | EDITING | AGGREGATES, "tracing.noise_std")


def test_added_layer_adds_only_its_jobs(finished_by_layers_per_job):
    workdir, config, full = finished_by_layers_per_job
    layers = list(config["editing"]["layers"])
    new = max(layers) + 1
    jobs = _replan(workdir, {"editing": {"layers": layers + [new]}}, "layer")
    edits = _edit_jobs(jobs)
    assert edits and all(j["reason"].startswith("Missing output files") for j in edits)
    if config["editing"]["layers_per_job"] == 1:
        assert {j["wildcards"]["layer"] for j in edits} == {str(new)}
        per_layer = len(_edit_jobs(full)) // len(layers)
        assert len(edits) == per_layer
    else:
        # One job per (variant, method, shard) edits every layer: each is replanned because its
        # new layer's result is missing, and only that one (its other layers' results exist and
        # come back from their per-layer checkpoints, test_edit_job_reuses_other_layers below).
        assert len(edits) == len(_edit_jobs(full))
        for job in edits:
            missing = job["reason"].split(":", 1)[1].split(";")[0]
            assert f"/{new}/" in missing and not any(f"/{layer}/" in missing for layer in layers)
    # The peak-layer histogram marks the edit layers, so it is redrawn; nothing else upstream.
    _assert_only(jobs, {*EDIT_RULES, "plot_peak_layers"} | AGGREGATES, "editing.layers")


def test_code_reruns_follow_content_not_timestamps(finished):
    workdir, _, full = finished
    root = workdir.parent
    # A checkout or an editor save that leaves the content alone reruns nothing.
    for script in (root / "workflow" / "scripts").glob("*.py"):
        os.utime(script)
    assert _replan(workdir) == []
    # Editing the finetuning module reruns the finetuning edit jobs (and what aggregates them).
    ft = root / "src" / "locedit" / "editing" / "ft.py"
    original = ft.read_text()
    ft.write_text(original + "\n# a change\n")
    try:
        jobs = _replan(workdir)
    finally:
        ft.write_text(original)
    _assert_only(jobs, set(EDIT_RULES) | AGGREGATES, "src/locedit/editing/ft.py")
    config = study_config()
    ft_methods = {"ft-1", "ft-5"} & set(config["editing"]["run_methods"])
    edits = _edit_jobs(jobs)
    assert ft_methods and {j["wildcards"]["method"] for j in edits} == ft_methods
    assert len(edits) == len(_edit_jobs(full, method=ft_methods))


def test_edit_job_reuses_other_layers(tmp_path):
    """Checkpoints are per layer and their fingerprint leaves out the job's layer list, so a job
    that gains a layer reuses its other layers' edits (and a per-layer job's are the same)."""
    import importlib.util
    from types import SimpleNamespace

    script = Path(__file__).resolve().parents[2] / "workflow" / "scripts" / "edit_facts.py"
    spec = importlib.util.spec_from_file_location("edit_facts_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = tmp_path / "inputs.json"
    inputs.write_text("{}")

    def job(layers, **changed):
        params = dict(model={"source": "toy"}, hparams={"lr": 0.1}, engine={"batched": True},
                      aggregation="mean", essence={"cap": 5}, batch_size=64, code="abc",
                      layers=layers)  # fmt: skip
        params.update(changed)
        return SimpleNamespace(params=SimpleNamespace(**params), input=[str(inputs)])

    assert module.fingerprint(job([0, 2])) == module.fingerprint(job([0, 2, 4])) == module.fingerprint(job([2]))
    assert module.fingerprint(job([0, 2])) != module.fingerprint(job([0, 2], hparams={"lr": 0.2}))
