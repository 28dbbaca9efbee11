"""Where window-5 MLP tracing peaks on a run: at which token and which layer, per fact.

The paper and ROME find MLP tracing effects peaking at the *last subject token* in early-to-middle
layers, with the peak layer varying across facts (paper Figs. 1-2). This prints, for a finished
run's ``tracing/grid.parquet`` (``kind``/``window`` selectable), how many facts peak at the last
subject token, at the prompt's final token and elsewhere, and the histogram of peak layers
(1-indexed)::

    python benchmarks/toy_localisation.py results/toy/synthetic
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--kind", default="mlp")
    ap.add_argument("--window", type=int, default=5)
    args = ap.parse_args()
    grid = pd.read_parquet(args.results / "tracing" / "grid.parquet")
    grid = grid[(grid["kind"] == args.kind) & (grid["window"] == args.window)]
    last = grid.groupby("case_id")["token_index"].transform("max")
    grid = grid.assign(is_final=grid["token_index"] == last)
    peaks = grid.loc[grid.groupby("case_id")["p_restored"].idxmax()]
    n = len(peaks)
    where = {
        "last subject token": int(peaks["is_last_subject"].sum()),
        "prompt's final token": int((peaks["is_final"] & ~peaks["is_last_subject"]).sum()),
        "elsewhere": int((~peaks["is_final"] & ~peaks["is_last_subject"]).sum()),
    }
    print(f"{n} facts, {args.kind} window {args.window}: peak at " + ", ".join(
        f"{k} {v} ({100 * v / n:.0f}%)" for k, v in where.items()))
    layers = (peaks["layer"] + 1).value_counts().sort_index()
    print("peak layers (1-indexed): " + ", ".join(f"{k}: {v}" for k, v in layers.items()))


if __name__ == "__main__":
    main()
