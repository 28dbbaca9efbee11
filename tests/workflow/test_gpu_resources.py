"""GPU scheduling: every model-loading job holds `gpu` (MODEL_RULES in locedit.registry, the one
place that lists them), so `--resources gpu=N` caps how many run at once."""

from __future__ import annotations

import re
import shutil
from datetime import datetime

import pytest
import yaml

from locedit.registry.rules import EDIT_RULES
from tests.workflow.helpers import REPO, write_config
from tests.workflow.runs import (
    TARGETS,
    orchestration_config,
    prepare_workdir,
    reference_run,
    run,
)

pytestmark = pytest.mark.slow


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
    cfg = orchestration_config()
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
    """The one-thread edit jobs on 6 cores, each holding one GPU, under --resources gpu=2: never
    more than two at once (and two at once, so the cap is not a serialisation)."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir, symlinks=True)
    cfg = orchestration_config()
    cfg["model"]["gpus_per_job"] = 1  # as under CUDA; the jobs themselves run on the CPU
    path = write_config(workdir, cfg)
    edits = [t for t in TARGETS if t.endswith("edits.parquet")]
    shutil.rmtree(workdir / "logs/edit_facts")
    run(workdir, "--cores", "6", "--resources", "gpu=2", "--forcerun", *EDIT_RULES, *edits,
        configfile=path)
    spans = _job_spans(workdir)
    assert len(spans) == len(cfg["editing"]["variants"]) * len(cfg["editing"]["run_methods"])
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, spans
