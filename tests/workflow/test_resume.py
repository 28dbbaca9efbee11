"""``kill -9`` of the whole run in the middle of a long job, then the documented resume command
(``snakemake --unlock``; ``snakemake --cores N --rerun-incomplete``) finishes with results equal
to an uninterrupted run, and the killed job resumes from its checkpoints instead of starting over.

Exact by construction, never by timing: edit jobs checkpoint a chunk of facts as one file renamed
into place (``editing.engine.chunk``, 3 facts here, so part of a layer is reused). The test
freezes the whole run (SIGSTOP to its process group) once chunks exist, counts the chunk files
that the kill will leave, then kills it (SIGKILL); the resumed job must report exactly that many
reused edits. If the run finished a job between the poll and the freeze, it is thawed and polled
again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from tests.workflow.runs import (
    RESULTS, TIMING_COLUMNS, assert_same_results, run, run_env, snakemake_cmd, study_config,
    study_run,
    STUDY_RUN_TESTS,
)

#: Edit jobs checkpoint chunks of finished facts in hidden cache directories next to their
#: outputs (``results/.../.cache/edit_facts/...``); the declared output is written at the end.
CHUNK_GLOB = "results/*/*/.cache/edit_facts/**/chunk_*.json"
CHUNK_SIZE = re.compile(r"_(\d+)\.json$")
KILL_AFTER_CHUNKS = 2

pytestmark = STUDY_RUN_TESTS


def _running_chunks(workdir: Path) -> dict[Path, int]:
    """Per cache directory of a cut-off edit job (its layer's declared output does not exist),
    the facts in its complete chunk files."""
    out: dict[Path, int] = {}
    for p in workdir.glob(CHUNK_GLOB):
        cache = p.parent  # results/{model}/{dataset}/.cache/edit_facts/{variant}/{method}/{layer}/{shard}
        model, dataset, _, _, *wild = cache.relative_to(workdir / "results").parts
        shard_out = workdir / "results" / model / dataset / "editing" / Path(*wild[:-1]) / f"{wild[-1]}.parquet"
        if not shard_out.exists():
            out[cache] = out.get(cache, 0) + int(CHUNK_SIZE.search(p.name).group(1))
    return out


def _incomplete(workdir: Path) -> list[Path]:
    """Outputs Snakemake has marked as being written (its record of running jobs)."""
    marks = workdir / ".snakemake" / "incomplete"
    return [p for p in marks.rglob("*") if p.is_file()] if marks.exists() else []


def _freeze_and_kill(proc: subprocess.Popen, workdir: Path, log: Path) -> dict[Path, int]:
    """Freeze the run once cut-off edit jobs hold KILL_AFTER_CHUNKS chunk files, count them
    while nothing moves, then SIGKILL; returns the count per cache directory."""
    deadline = time.time() + 900
    while True:
        assert proc.poll() is None, (
            f"the run ended (rc {proc.returncode}) before edit jobs had checkpointed "
            f"{KILL_AFTER_CHUNKS} chunks: {log.read_text()[-3000:]}"
        )
        assert time.time() < deadline, "no chunk checkpoint appeared within 15 min"
        if len(list(workdir.glob(CHUNK_GLOB))) >= KILL_AFTER_CHUNKS:
            os.killpg(proc.pid, signal.SIGSTOP)
            frozen = _running_chunks(workdir)
            if frozen and _incomplete(workdir):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return frozen
            os.killpg(proc.pid, signal.SIGCONT)  # those jobs had finished: look again
        time.sleep(0.05)


def test_kill_9_mid_job_then_resume(tmp_path, tmp_path_factory):
    reference = study_run(tmp_path_factory)
    # Start from the finished study with the error-injection edits undone (outputs and their
    # checkpoints removed): the run below redoes those edit jobs, one per method.
    workdir = tmp_path / "killed"
    shutil.copytree(reference, workdir, symlinks=True)
    cfg = workdir / "config.yaml"
    shutil.rmtree(workdir / RESULTS / "editing/error_injection")
    shutil.rmtree(workdir / RESULTS / ".cache/edit_facts")
    assert not list(workdir.glob(CHUNK_GLOB))
    ed = study_config()["editing"]
    targets = [f"{RESULTS}/editing/error_injection/{m}/{layer}/0.parquet"
               for m in ed["run_methods"] for layer in ed["layers"]]
    log_path = tmp_path / "first_run.log"
    # Own process group, so that one killpg takes snakemake and every job it started, as a
    # power loss or a node failure would.
    with log_path.open("w") as log:
        proc = subprocess.Popen(snakemake_cmd(workdir, "--cores", "2", *targets, configfile=cfg),
                                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=run_env(),
                                start_new_session=True)
        try:
            killed = _freeze_and_kill(proc, workdir, log_path)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert killed and _incomplete(workdir), "the kill did not land in the middle of a job"
    # A chunk is one file: the kill leaves whole chunks (the size in each name) or none.
    for cache in killed:
        for p in cache.glob("chunk_*.json"):
            got = json.loads(p.read_text())
            assert len(got["values"]) == int(CHUNK_SIZE.search(p.name).group(1))

    # The documented resume command (a stale lock is left by kill -9).
    run(workdir, "--unlock", configfile=cfg)
    run(workdir, "--cores", "2", "--rerun-incomplete", *targets, configfile=cfg)

    assert not _incomplete(workdir)
    assert not list((workdir / "results").rglob("*.tmp")), "a killed write's temporary was left"
    assert assert_same_results(workdir, reference) > 0
    # Chunks finished before the kill were reused, not recomputed: the resumed job's log
    # (rewritten by the resumed job) reports exactly the facts of the chunks the kill left.
    for cache, n in killed.items():
        model, dataset, _, rule, *wild = cache.relative_to(workdir / "results").parts
        # one log per layer's job, or one per job over every layer (editing.layers_per_job)
        logs = workdir / "logs" / rule / model / dataset
        log = logs / Path(*wild[:-1]) / f"{wild[-1]}.log"
        if not log.exists():
            log = logs / Path(*wild[:-2]) / "all" / f"{wild[-1]}.log"
        where = re.escape(cache.relative_to(workdir).as_posix())
        m = re.search(rf"reused (\d+) checkpointed edit\(s\) from {where}\n", log.read_text())
        assert m and int(m.group(1)) == n, f"{log}: expected {n} reused edits:\n{log.read_text()[-2000:]}"
    # And the resumed workflow is complete: nothing left to do.
    proc = run(workdir, "-n", *targets, configfile=cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_hyperparameters_do_not_reuse_checkpoints(tmp_path, tmp_path_factory):
    """Checkpoints resume a job cut off under the same settings only: after a change of a ROME
    hyperparameter the rerun ROME job must recompute its facts, not return the old results."""
    reference = study_run(tmp_path_factory)
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
