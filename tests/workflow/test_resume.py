"""``kill -9`` of the whole run in the middle of a long job, then the documented resume command
(``snakemake --unlock``; ``snakemake --cores N --rerun-incomplete``) finishes with results equal
to an uninterrupted run, and the killed job resumes from its per-datapoint checkpoints instead
of starting over."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from tests.workflow.runs import (
    TARGETS, TIMING_COLUMNS, assert_same_results, reference_run, run, run_env, snakemake_cmd,
)

#: Long jobs checkpoint finished datapoints in hidden cache directories next to their outputs
#: (``results/.../.cache/...``); the declared output is written atomically at the end.
CHECKPOINT_GLOB = "results/**/.cache/**/*.json"
KILL_AFTER_CHECKPOINTS = 2


def _checkpoints(workdir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in workdir.glob(CHECKPOINT_GLOB) if p.is_file()}


def _running_checkpoints(workdir: Path) -> dict[Path, int]:
    """Checkpoints of edit jobs whose declared output does not exist yet (jobs cut off)."""
    out = {}
    for p, mtime in _checkpoints(workdir).items():
        cache = p.parent  # results/{model}/{dataset}/.cache/edit_facts/{variant}/{method}/{layer}/{shard}
        rel = cache.relative_to(workdir / "results")
        model, dataset, _, rule, *wild = rel.parts
        shard_out = workdir / "results" / model / dataset / "editing" / Path(*wild[:-1]) / f"{wild[-1]}.parquet"
        if rule == "edit_facts" and not shard_out.exists():
            out[p] = mtime
    return out


def _incomplete(workdir: Path) -> list[Path]:
    """Outputs Snakemake has marked as being written (its record of running jobs)."""
    marks = workdir / ".snakemake" / "incomplete"
    return [p for p in marks.rglob("*") if p.is_file()] if marks.exists() else []


def test_kill_9_mid_job_then_resume(tmp_path, tmp_path_factory):
    reference = reference_run(tmp_path_factory)
    # Start from the finished reference run with the editing stage undone (outputs and their
    # checkpoints removed): the run below redoes the edit jobs, the long ones.
    workdir = tmp_path / "killed"
    shutil.copytree(reference, workdir, symlinks=True)
    cfg = workdir / "config.yaml"
    for res in (workdir / "results").glob("*/*"):
        shutil.rmtree(res / "editing", ignore_errors=True)
        shutil.rmtree(res / ".cache", ignore_errors=True)
        (res / "edits.parquet").unlink(missing_ok=True)
    assert not _checkpoints(workdir)
    log = (tmp_path / "first_run.log").open("w")
    # Own process group, so that one killpg takes snakemake and every job it started, as a
    # power loss or a node failure would.
    proc = subprocess.Popen(snakemake_cmd(workdir, "--cores", "2", *TARGETS, configfile=cfg), cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT, env=run_env(),
                            start_new_session=True)
    deadline = time.time() + 900
    try:
        while True:
            if len(_running_checkpoints(workdir)) >= KILL_AFTER_CHECKPOINTS and _incomplete(workdir):
                break
            assert proc.poll() is None, (
                f"the run ended (rc {proc.returncode}) before a long job had checkpointed "
                f"{KILL_AFTER_CHECKPOINTS} datapoints: {(tmp_path / 'first_run.log').read_text()[-3000:]}"
            )
            assert time.time() < deadline, "no checkpoint appeared within 15 min"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    killed_ckpts = _running_checkpoints(workdir)
    assert killed_ckpts and _incomplete(workdir), "the kill did not land in the middle of a job"

    # The documented resume command (a stale lock is left by kill -9).
    run(workdir, "--unlock", configfile=cfg)
    run(workdir, "--cores", "2", "--rerun-incomplete", *TARGETS, configfile=cfg)

    assert not _incomplete(workdir)
    assert assert_same_results(workdir, reference) > 0
    # Datapoints finished before the kill were reused, not recomputed: the resumed job's log
    # (rewritten by the resumed job) reports as many reused checkpoints as the kill left.
    per_job: dict[Path, int] = {}
    for ckpt in killed_ckpts:
        per_job[ckpt.parent] = per_job.get(ckpt.parent, 0) + 1
    for cache, n in per_job.items():
        rel = cache.relative_to(workdir / "results")  # {model}/{dataset}/.cache/edit_facts/...
        model, dataset, _, rule, *wild = rel.parts
        # one log per layer's job, or one per job over every layer (editing.layers_per_job)
        logs = workdir / "logs" / rule / model / dataset
        log = logs / Path(*wild[:-1]) / f"{wild[-1]}.log"
        if not log.exists():
            log = logs / Path(*wild[:-2]) / "all" / f"{wild[-1]}.log"
        where = re.escape(cache.relative_to(workdir).as_posix())
        m = re.search(rf"reused (\d+) checkpointed edit\(s\) from {where}\n", log.read_text())
        assert m and int(m.group(1)) == n, f"{log}: expected {n} reused checkpoints:\n{log.read_text()[-2000:]}"
    # And the resumed workflow is complete: nothing left to do.
    proc = run(workdir, "-n", *TARGETS, configfile=cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_hyperparameters_do_not_reuse_checkpoints(tmp_path, tmp_path_factory):
    """Checkpoints resume a job cut off under the same settings only: after a change of a ROME
    hyperparameter the rerun ROME job must recompute its facts, not return the old results."""
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path / "changed"
    shutil.copytree(reference, workdir, symlinks=True)
    shards = sorted((workdir / "results").glob("*/*/editing/error_injection/rome/*/*.parquet"))
    assert shards, "the reference run has no ROME error-injection shard"
    target = shards[0].relative_to(workdir).as_posix()
    before = pd.read_parquet(shards[0])
    override = tmp_path / "override.yaml"
    override.write_text("editing:\n  methods:\n    rome:\n      v_lr: 0.05\n      v_num_grad_steps: 3\n")
    run(workdir, "--cores", "2", target, "--configfile", str(workdir / "config.yaml"), str(override))
    after = pd.read_parquet(workdir / target)
    assert len(after) == len(before) > 0
    # Result columns only: timing columns differ between any two runs, even of reused rows.
    numeric = [c for c in before.select_dtypes("number").columns.intersection(after.columns)
               if not TIMING_COLUMNS.search(str(c))]
    assert "rewrite_score" in numeric
    assert not before[numeric].equals(after[numeric]), (
        "the ROME job reran with other hyperparameters but returned the old rows: its per-case "
        "checkpoints were reused although they belong to the old settings"
    )
    # ... and the job ran with the new values (its log prints the hyperparameters it used).
    logs = sorted((workdir / "logs/edit_facts").rglob("error_injection/rome/*/*.log"))
    assert logs and any("'v_lr': 0.05" in p.read_text() and "'v_num_grad_steps': 3" in p.read_text()
                        for p in logs)
