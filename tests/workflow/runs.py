"""Shared machinery of the workflow tests: one study run per session, job lists, output
comparison.

The study (:func:`study_config`: the default config on 12 records at two layers) runs once per
pytest session into a scratch directory (:func:`study_run`): the end-to-end test checks its
tables, the science and one-fact tests read its trained toy model and edits, and the resume,
bad-input, GPU-cap and tuning tests start from copies of it, so the suite pays for one
uninterrupted run only. Nothing here touches the repository's own ``results/`` or ``.snakemake/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.helpers import REPO, write_config

#: Columns that measure wall time (edit_seconds, opt_seconds, ...): they differ between any two runs.
TIMING_COLUMNS = re.compile(r"(^|_)(seconds|secs|time|duration)$")
#: Output kinds compared by content; other files (figures, HTML) only have to exist on both sides
#: (PDFs embed creation dates; the tables they are drawn from are compared).
TABLE_SUFFIXES = {".parquet", ".json", ".csv", ".tsv", ".txt", ".md", ".tex"}

_CACHE: dict[str, Path] = {}


def snakemake_cmd(workdir: Path, *args: str, configfile: Path | None = None) -> list[str]:
    """The command line ``snakemake -s REPO/Snakefile -d workdir [--configfile] args``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd + list(args)


def run_env() -> dict[str, str]:
    """Environment of every test run: offline (planning and runs never touch the network)."""
    return dict(
        os.environ, PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        TQDM_DISABLE="0",
    )


def run(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True,
        timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir``; output captured; raises with the tail of it on failure."""
    cmd = snakemake_cmd(workdir, *args, configfile=configfile)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=run_env(),
                          timeout=timeout)
    if check and proc.returncode != 0:
        logs = failed_logs(workdir)
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )
    return proc


def failed_logs(workdir: Path, limit: int = 4000) -> str:
    """The newest rule logs, to make a failure readable."""
    logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-limit:]}" for p in logs[-3:])


#: The study the workflow tests share, over config.yaml: the default world and toy model (so
#: the science tests see a trained model) and every rule of the default DAG (all five editing
#: problems, every method, the analysis), on the first 12 records at two edit layers. Edit
#: jobs checkpoint every 3 facts (the resume test reuses some) and edit one fact per batch, as
#: the one-fact API does, so the API's row equals the workflow's to float rounding.
STUDY_OVERRIDES = {
    "model": {"device": "cpu"},
    "dataset": {"limit": 12},
    "editing": {"layers": [0, 4], "engine": {"chunk": 3, "max_facts": 1}},
    "analysis": {"bootstrap_replicates": 20, "permutations": 20, "min_rows": 3},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


#: The repository's config.yaml (``REPO`` is pointed at a copy of the code by test_reruns).
DEFAULT_CONFIG = REPO / "config.yaml"


def study_config() -> dict:
    """``config.yaml`` with :data:`STUDY_OVERRIDES`."""
    return _merge(yaml.safe_load(DEFAULT_CONFIG.read_text()), STUDY_OVERRIDES)


def prepare_workdir(workdir: Path, config: dict | None = None) -> Path:
    """Create ``workdir`` with its ``config.yaml``; returns the config path."""
    workdir.mkdir(parents=True, exist_ok=True)
    return write_config(workdir, config if config is not None else study_config())


#: Marks of every test module that reads the study run: slow, and one xdist group, so that under
#: ``pytest -n 2 --dist loadgroup`` (the suite's command) one worker runs the study once and every
#: test that reads it, while the other worker runs the rest of the suite.
STUDY_RUN_TESTS = [pytest.mark.slow, pytest.mark.xdist_group("study_run")]

#: The study's results directory.
RESULTS = "results/toy/synthetic"
#: Targets of runs over the study: none, i.e. the default target (every rule of the default DAG).
TARGETS: list[str] = []


def study_run(tmp_path_factory) -> Path:
    """The study (:func:`study_config`) run once, uninterrupted, locally, with ``snakemake
    --cores 2`` and no target; shared by the whole session, its output in ``run.log``.

    Kept in the session's base temp dir (pytest's ``tmp_path_factory``). Treat it as read-only:
    copy it before changing anything. ``LOCEDIT_STUDY_RUN``: a finished run of it made earlier
    (development shortcut).
    """
    if "study" in _CACHE:
        return _CACHE["study"]
    workdir = Path(os.environ.get("LOCEDIT_STUDY_RUN") or tmp_path_factory.getbasetemp() / "study_run")
    done = workdir / ".study_done"
    if not done.exists():
        if workdir.exists():
            shutil.rmtree(workdir)
        cfg = prepare_workdir(workdir)
        # One thread for the rules that would take every core: the suite runs beside this run
        # (pytest -n 2), and two-thread jobs beside a busy core stall each other (the toy's
        # training took 3.7x its time alone). Threads change no rerun decision.
        one = [f"{rule}=1" for rule in ("train_toy_model", "filter_known_facts", "compute_layer_stats")]
        proc = run(workdir, "--cores", "2", "--set-threads", *one, "--", *TARGETS, configfile=cfg,
                   timeout=1800)
        (workdir / "run.log").write_text(proc.stdout + proc.stderr)
        done.write_text("ok\n")
    _CACHE["study"] = workdir
    return workdir


def toy_dir(workdir: Path) -> Path:
    """The toy model the config of ``workdir`` trains (``resources/models/toy-<key>``)."""
    from locedit.api import toy_dir as config_toy_dir

    return config_toy_dir(workdir / "config.yaml")


def world_dir(workdir: Path) -> Path:
    """The fact world of the config of ``workdir`` (``resources/world/<key>``)."""
    from locedit.provenance import world_dir as config_world_dir

    return workdir / config_world_dir(yaml.safe_load((workdir / "config.yaml").read_text()))


def stats_dir(workdir: Path) -> Path:
    """The one statistics directory of a run (``resources/stats/<name>-<key>``)."""
    (manifest,) = (workdir / "resources" / "stats").glob("*/manifest.json")
    return manifest.parent


def seed_resources(workdir: Path, reference: Path) -> None:
    """Give ``workdir`` the reference run's generated world and trained toy model (files only,
    no provenance: Snakemake then takes them as given), so a test run starts at the records."""
    for part in ("resources/world", "resources/models"):
        shutil.copytree(reference / part, workdir / part)


def dry_run_jobs(workdir: Path, *args: str, configfile: Path | None = None) -> dict[str, int]:
    """Jobs a dry run would execute, counted per rule (``all`` included); {} when up to date."""
    proc = run(workdir, "-n", "--nolock", "--quiet", "rules", *args, configfile=configfile)
    return parse_job_stats(proc.stdout + proc.stderr)


def parse_job_stats(text: str) -> dict[str, int]:
    """Parse Snakemake's "Job stats" table (``rule  count`` rows up to ``total``)."""
    counts: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("Job stats"):
            for row in lines[i + 1:]:
                m = re.match(r"^\s*(\S+)\s+(\d+)\s*$", row)
                if not m:
                    continue
                if m.group(1) == "total":
                    return counts
                counts[m.group(1)] = int(m.group(2))
    return counts


def dry_run_listing(workdir: Path, *args: str, configfile: Path | None = None) -> list[dict]:
    """Every job of a full dry-run listing: ``{"rule", "wildcards" (dict), "output", "reason"}``.

    Empty when everything is up to date.
    """
    proc = run(workdir, "-n", "--nolock", *args, configfile=configfile)
    return parse_listing(proc.stdout + proc.stderr)


def parse_listing(text: str) -> list[dict]:
    jobs: list[dict] = []
    job = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if m and not line.startswith(" "):
            job = {"rule": m.group(1), "wildcards": {}, "output": "", "reason": ""}
            jobs.append(job)
            continue
        if job is None or not line.startswith("    "):
            job = None if not line.startswith("    ") else job
            continue
        key, _, value = line.strip().partition(": ")
        if key == "wildcards":
            job["wildcards"] = dict(kv.split("=", 1) for kv in value.split(", "))
        elif key in ("output", "reason"):
            job[key] = value
    return jobs


def touched_tree(workdir: Path, configfile: Path) -> int:
    """Stand in for a finished run without running anything: every output of the plan is
    created empty, then ``snakemake --touch --forceall`` records the provenance metadata of
    every job (params, input set, code hash) exactly as a real run does, touching the outputs in
    job order. Rerun decisions read only that metadata, file times and checksums, so dry runs
    against this tree plan what they would plan after a real run. Returns the job count.
    """
    jobs = dry_run_listing(workdir, "--cores", "1", configfile=configfile)
    for job in jobs:
        for out in filter(None, (o.strip() for o in job["output"].split(","))):
            path = workdir / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    run(workdir, "--touch", "--forceall", "--cores", "1", "--quiet", configfile=configfile)
    return len(jobs)


def result_files(workdir: Path) -> dict[str, Path]:
    """Declared result files under results/ (relative path → path), hidden caches excluded."""
    root = workdir / "results"
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(workdir)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p
    return out


def assert_same_results(ours: Path, reference: Path) -> int:
    """Every result file of ``reference`` exists in ``ours`` with equal content (tables compared
    as data, floats exactly); returns the number of files compared by content."""
    a, b = result_files(ours), result_files(reference)
    assert sorted(a) == sorted(b), (
        f"different result files: only here {sorted(set(a) - set(b))}, "
        f"only in the reference {sorted(set(b) - set(a))}"
    )
    compared = 0
    for rel, path in a.items():
        ref = b[rel]
        if path.suffix == ".parquet":
            ours_df, ref_df = pd.read_parquet(path), pd.read_parquet(ref)
            timing = [c for c in ref_df.columns if TIMING_COLUMNS.search(str(c))]
            pd.testing.assert_frame_equal(ours_df.drop(columns=timing, errors="ignore"),
                                          ref_df.drop(columns=timing), check_exact=True, obj=rel)
        elif path.suffix == ".json":
            assert json.loads(path.read_text()) == json.loads(ref.read_text()), rel
        elif path.suffix in TABLE_SUFFIXES:
            assert path.read_text() == ref.read_text(), rel
        else:
            assert path.stat().st_size > 0, f"{rel} is empty"
            continue
        compared += 1
    return compared


def yaml_dump(obj, path: Path) -> Path:
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path
