"""Compare two runs' results, table by table: the refactor check of issue #17 ("results of the
default run are identical, timing columns aside").

    python benchmarks/compare_runs.py BEFORE_ROOT AFTER_ROOT

Every parquet and CSV under ``results/`` present in both runs is compared with
``DataFrame.equals`` after dropping timing columns (``*_seconds``, ``seconds``); JSON and
markdown tables are compared as text. Exit status 1 if anything differs or is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

TIMING = ("_seconds", "seconds", "wall_s")


def _frame(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return df.drop(columns=[c for c in df.columns if str(c).endswith(TIMING)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    a_root, b_root = args.before / "results", args.after / "results"
    files = sorted(p.relative_to(a_root) for p in a_root.rglob("*")
                   if p.is_file() and p.suffix in (".parquet", ".csv", ".json", ".md")
                   and ".cache" not in p.parts)  # fmt: skip
    bad = 0
    for rel in files:
        a, b = a_root / rel, b_root / rel
        if not b.exists():
            print(f"MISSING  {rel}")
            bad += 1
            continue
        if a.suffix in (".parquet", ".csv"):
            same = _frame(a).equals(_frame(b))
        else:
            same = a.read_text() == b.read_text()
        bad += not same
        print(f"{'same' if same else 'DIFFERS':8s} {rel}")
    print(f"{len(files)} files compared, {bad} differ or are missing")
    return int(bad > 0)


if __name__ == "__main__":
    sys.exit(main())
