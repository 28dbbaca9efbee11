"""The numbers the README reports about a finished run, read from its outputs.

Per rule: jobs and seconds summed over jobs (Snakemake's ``benchmarks/`` tables); for the edit
jobs also edits per second of job time and what a job pays besides editing and evaluating
(start-up: imports, model and statistics loading); facts known; mean rewrite score per method,
problem and edit layer (markdown, layers 1-indexed); where window-5 MLP tracing peaks::

    python benchmarks/run_summary.py            # the run in this directory
    python benchmarks/run_summary.py --root /path/to/clone
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd


def rule_seconds(root: Path) -> pd.DataFrame:
    rows = []
    for f in (root / "benchmarks").glob("*/**/*.tsv"):
        table = pd.read_csv(f, sep="\t")
        rows.append({"rule": f.relative_to(root / "benchmarks").parts[0], "s": float(table["s"].iloc[-1])})
    return pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="count", seconds="sum")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--results", default="results/toy/synthetic")
    args = ap.parse_args()
    res = args.root / args.results
    rules = rule_seconds(args.root)
    print("## seconds per rule (summed over jobs)\n")
    print(rules.round(1).to_markdown())
    edits = pd.read_parquet(res / "edits.parquet")
    job_s = float(rules.loc["edit_facts", "seconds"])
    n_jobs = int(rules.loc["edit_facts", "jobs"])
    work = float(edits["edit_seconds"].sum() + edits["eval_seconds"].sum())
    print(f"\n{len(edits)} edits in {n_jobs} edit jobs: {job_s:.0f} job-seconds, "
          f"{len(edits) / job_s:.2f} edits per job-second; editing {edits['edit_seconds'].sum():.0f} s, "
          f"evaluation {edits['eval_seconds'].sum():.0f} s, the rest (start-up) "
          f"{(job_s - work) / n_jobs:.1f} s per job")  # fmt: skip
    print(edits.groupby("method")[["edit_seconds", "eval_seconds"]].sum().round(1).to_markdown())
    facts = pd.read_parquet(res / "facts.parquet")
    print(f"\n{len(facts)} records, {int(facts['is_correct'].sum())} known "
          f"({100 * facts['is_correct'].mean():.1f} %)")  # fmt: skip
    table = edits.pivot_table(index=["method", "variant"], columns="layer", values="rewrite_score")
    table.columns = [f"layer {c + 1}" for c in table.columns]
    print("\n## mean rewrite score (layers 1-indexed)\n")
    print(table.round(3).to_markdown())
    here = Path(__file__).resolve().parent
    print()
    subprocess.run([sys.executable, str(here / "toy_localisation.py"), str(res)], check=True)
    summary = res / "analysis" / "tables" / "summary.md"
    if summary.exists():
        print("\n## analysis summary\n")
        print(summary.read_text())


if __name__ == "__main__":
    main()
