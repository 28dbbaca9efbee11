"""Planning time and job count of the paper presets vs. one job per datapoint.

    python benchmarks/bench_planning.py [--repeat 3] [--baseline-limit 40]

For each preset: the wall time of ``snakemake -n --quiet rules --configfile <preset>`` in a
scratch directory (median of --repeat runs) and its job count. Baseline: the same preset with
every ``shard_size`` set to 1, i.e. one job per (datapoint, layer, method, variant) and per
(datapoint, kind, window), planned for the first --baseline-limit records and extrapolated
linearly to the preset's dataset.limit (planning the full per-datapoint DAG takes minutes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.workflow.runs import parse_job_stats, run_env, snakemake_cmd  # noqa: E402

PRESETS = ["config/paper_gptj.yaml", "config/paper_gpt2xl.yaml"]


def plan(config: Path) -> tuple[float, int]:
    """(seconds, jobs) of one dry run in a fresh scratch directory."""
    with tempfile.TemporaryDirectory(prefix="locedit-plan-") as tmp:
        npz_dir = (yaml.safe_load(config.read_text()).get("editing", {}).get("stats") or {}).get("rome_npz_dir")
        if npz_dir:  # ROME's statistics, downloaded before a real run (planning checks the folder)
            Path(tmp, npz_dir).mkdir(parents=True)
        cmd = snakemake_cmd(Path(tmp), "-n", "--quiet", "rules", "--cores", "1", configfile=config)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=run_env())
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"planning failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed, sum(parse_job_stats(proc.stdout + proc.stderr).values())


def set_shard_size(node, size: int):
    """Every ``shard_size`` key in the config, at any depth, set to ``size``."""
    if isinstance(node, dict):
        return {k: (size if k == "shard_size" else set_shard_size(v, size)) for k, v in node.items()}
    return node


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-limit", type=int, default=40)
    args = ap.parse_args()
    for preset in PRESETS:
        path = REPO / preset
        runs = [plan(path) for _ in range(args.repeat)]
        seconds = statistics.median(t for t, _ in runs)
        jobs = runs[0][1]
        cfg = yaml.safe_load(path.read_text())
        limit = cfg["dataset"]["limit"]
        base = set_shard_size(cfg, 1)
        base["dataset"]["limit"] = args.baseline_limit
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(base, f)
        b_seconds, b_jobs = plan(Path(f.name))
        Path(f.name).unlink()
        scale = limit / args.baseline_limit
        b_jobs_full, b_seconds_full = b_jobs * scale, b_seconds * scale
        print(f"{preset}: {jobs} jobs, planned in {seconds:.2f} s (median of {args.repeat})")
        print(f"  per-datapoint baseline: {b_jobs} jobs in {b_seconds:.2f} s for "
              f"{args.baseline_limit} records -> ~{b_jobs_full:,.0f} jobs, ~{b_seconds_full:,.0f} s "
              f"for {limit} (linear extrapolation)")
        print(f"  ratio: {b_jobs_full / jobs:,.1f}x fewer jobs, "
              f"{b_seconds_full / seconds:,.1f}x faster planning")


if __name__ == "__main__":
    main()
