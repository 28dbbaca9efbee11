"""The reduced workflow through ``--profile profiles/slurm`` on a real (single-node) SLURM.

``slurm_up.sh`` installs slurm-wlm + munge with apt (root) and starts munged, slurmctld and
slurmd on this machine, with two fake GPUs as gres and partitions ``cpu``/``gpu`` as the profile
names them; the node advertises more CPUs and memory than it has so the profile's GPT-J-sized
requests are scheduled unchanged. The results must equal the local run of the same config.
Skipped, with the reason, where SLURM cannot be installed or started (not root, no apt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workflow.runs import (
    REPO, RESULTS, assert_same_results, prepare_workdir, run, seed_resources, study_config,
)

HERE = Path(__file__).parent
STATE = Path(os.environ.get("LOCEDIT_SLURM_STATE", "/tmp/locedit-slurm"))
CLUSTER_ENV = {"STATE": str(STATE), "FAKE_GPUS": "2", "NODE_CPUS": "16", "NODE_MEM_MB": "262144"}

pytestmark = pytest.mark.cluster


def cluster_config() -> dict:
    """A small study for the SLURM round trip: every kind of job (CPU rules, model rules on the
    "GPU" partition, a method with statistics, one without) on six records, one layer, a toy
    model trained for a few steps (the science is not under test here)."""
    cfg = study_config()
    cfg["toy_model"]["steps"] = 40
    cfg["dataset"]["limit"] = 6
    cfg["tracing"].update(runs=[{"kind": "mlp", "window": 3}], peak_run={"kind": "mlp", "window": 3},
                          samples=3, only_correct=False)
    cfg["editing"].update(layers=[1], variants=["error_injection", "fact_forcing"],
                          run_methods=["rome", "ft-1"], only_correct=False)
    cfg["analysis"]["window"] = 3
    return cfg


#: What the SLURM run builds: the edits and tracing tables and the figures of tracing.
TARGETS = [f"{RESULTS}/{name}" for name in (
    "facts.parquet", "tracing.parquet", "tracing/o_noise.parquet", "edits.parquet",
    "figures/tracing_heatmaps.png", "figures/tracing_peak_layers.png")]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The cluster study run locally, the reference the SLURM run must equal."""
    workdir = tmp_path_factory.mktemp("local") / "run"
    run(workdir, "--cores", "2", *TARGETS, configfile=prepare_workdir(workdir, cluster_config()))
    return workdir


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM; brought down afterwards if this fixture brought it up."""
    if not sys.platform.startswith("linux"):
        pytest.skip("SLURM test: needs Linux")
    if os.geteuid() != 0:
        pytest.skip("SLURM test: needs root to apt-get install slurm-wlm/munge and start the daemons")
    if os.environ.get("LOCEDIT_SKIP_SLURM"):
        pytest.skip("SLURM test: LOCEDIT_SKIP_SLURM is set")
    env = dict(os.environ, **CLUSTER_ENV)
    up = subprocess.run(["bash", str(HERE / "slurm_up.sh")], env=env, capture_output=True,
                        text=True, timeout=600)
    if up.returncode == 2:
        pytest.skip(f"SLURM test: {up.stderr.strip()[-500:]}")
    assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stdout}\n{up.stderr}"
    started_here = "already up" not in up.stdout
    yield
    if started_here:
        subprocess.run(["bash", str(HERE / "slurm_down.sh")], env=env, capture_output=True,
                       timeout=120)


def _slurm_jobs() -> list[dict]:
    """Jobs slurmctld knows, as dicts of ``scontrol show job`` fields (finished jobs stay
    visible for MinJobAge = 600 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "JobId" in fields:
            jobs.append(fields)
    return jobs


def test_reduced_workflow_through_slurm_profile(slurm_cluster, local_run, tmp_path):
    reference = local_run
    before = {j["JobId"] for j in _slurm_jobs()}
    workdir = tmp_path / "slurm_run"
    cfg = prepare_workdir(workdir, cluster_config())
    # The generated world and the trained toy model come from the local run; everything from
    # the records on (data, tracing, editing: CPU and "GPU" rules) goes through SLURM.
    seed_resources(workdir, reference)
    t0 = time.time()
    run(
        workdir, "--profile", str(REPO / "profiles" / "slurm"),
        # CI tuning only: poll every few seconds instead of the profile's cluster-friendly 40 s.
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "1",
        "--latency-wait", "5",
        *TARGETS, configfile=cfg, timeout=1500,
    )
    elapsed = time.time() - t0
    jobs = [j for j in _slurm_jobs() if j["JobId"] not in before]
    assert jobs, "nothing was submitted to SLURM"
    assert all(j["JobState"] == "COMPLETED" for j in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    # Model-running rules asked for one GPU (--gpus=1) on the gpu partition, as profiles/slurm
    # says; the others ran on the default partition.
    gpu_jobs = [j for j in jobs if "gpu" in j.get("TresPerJob", "") + j.get("TresPerNode", "")]
    assert gpu_jobs, f"no job requested a GPU: {jobs}"
    assert all(j["Partition"] == "gpu" for j in gpu_jobs), [j["Partition"] for j in gpu_jobs]
    assert all(j.get("TresPerJob", "gres:gpu:1").endswith("gpu:1") for j in gpu_jobs)
    compared = assert_same_results(workdir, reference)
    assert compared > 0
    print(f"SLURM run: {len(jobs)} sbatch submissions, {elapsed:.0f} s, {compared} files equal")
    # A second invocation through SLURM finds nothing to do.
    proc = run(workdir, "--profile", str(REPO / "profiles" / "slurm"), "-n", *TARGETS, configfile=cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
