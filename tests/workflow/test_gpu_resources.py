"""GPU scheduling: every model-loading job holds `gpu` (MODEL_RULES in locedit.registry, the one
place that lists them), so `--resources gpu=N` caps how many run at once."""

from __future__ import annotations

import re
import shutil
from datetime import datetime

import pytest
import yaml

from tests.workflow.helpers import REPO, write_config
from tests.workflow.runs import STUDY_RUN_TESTS, RESULTS, prepare_workdir, run, study_config, study_run

pytestmark = STUDY_RUN_TESTS


def model_rules() -> set[str]:
    from locedit.registry.rules import MODEL_RULES

    return set(MODEL_RULES)


def listing_resources(text: str) -> dict[str, set[str]]:
    """rule -> the `resources:` lines of its jobs in a dry-run listing."""
    out: dict[str, set[str]] = {}
    rule = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m and not line.startswith(" "):
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            out.setdefault(rule, set()).add(line.strip())
    return out


@pytest.mark.parametrize("device, gpus", [("cuda", "1"), ("cpu", "0")])
def test_model_jobs_hold_a_gpu_only_under_cuda(tmp_path, device, gpus):
    cfg = study_config()
    cfg["model"]["device"] = device
    cfg["editing"]["tuning"] = {"enabled": True}  # so every model-loading rule is planned
    path = prepare_workdir(tmp_path, cfg)
    proc = run(tmp_path, "-n", "--nolock", "--cores", "4", configfile=path)
    res = listing_resources(proc.stdout + proc.stderr)
    rules = model_rules()
    assert rules <= set(res), sorted(rules - set(res))
    for rule, lines in res.items():
        holds = {re.search(r"\bgpu=(\d+)", ln).group(1) if "gpu=" in ln else "0" for ln in lines}
        assert holds == ({gpus} if rule in rules else {"0"}), (rule, lines)


def test_slurm_profile_gives_exactly_the_model_rules_a_gpu():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    with_gpu = {r for r, res in profile["set-resources"].items() if res.get("gpu")}
    assert with_gpu == model_rules()


def _job_spans(workdir) -> list[tuple[datetime, datetime]]:
    """(first, last) log timestamp of every edit job: when it ran."""
    spans = []
    for log in (workdir / "logs/edit_facts").rglob("*.log"):
        stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", log.read_text(), re.MULTILINE)
        if stamps:
            parse = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1])]
            spans.append((parse[0], parse[1]))
    return spans


def test_gpu_cap_limits_concurrent_model_jobs(tmp_path, tmp_path_factory):
    """Six one-thread edit jobs (r-ROME and FT-1 of three editing problems) on 6 cores, each
    holding one GPU, under --resources gpu=2: never more than two at once (and two at once, so
    the cap is not a serialisation)."""
    workdir = tmp_path / "run"
    shutil.copytree(study_run(tmp_path_factory), workdir, symlinks=True)
    cfg = study_config()
    cfg["model"]["gpus_per_job"] = 1  # as under CUDA; the jobs themselves run on the CPU
    path = write_config(workdir, cfg)
    variants, methods = cfg["editing"]["variants"][:3], ["r-rome", "ft-1"]
    layer = cfg["editing"]["layers"][0]
    edits = [f"{RESULTS}/editing/{v}/{m}/{layer}/0.parquet" for v in variants for m in methods]
    # Those jobs' results (every layer's) and checkpoints removed: exactly they rerun.
    for v in variants:
        for m in methods:
            for out in (workdir / RESULTS / "editing" / v / m).glob("*/0.parquet"):
                out.unlink()
            shutil.rmtree(workdir / RESULTS / ".cache/edit_facts" / v / m)
    shutil.rmtree(workdir / "logs/edit_facts")
    run(workdir, "--cores", "6", "--resources", "gpu=2", "--", *edits, configfile=path)
    spans = _job_spans(workdir)
    assert len(spans) == len(edits)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, spans
