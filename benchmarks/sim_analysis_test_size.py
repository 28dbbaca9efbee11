"""Size of every test of "tracing adds nothing beyond layer" under a true null, and the null
distribution of the out-of-sample Diff R².

Simulates cells of G facts x L edit layers with a layer effect and a fact-level random effect in
the score, and no tracing effect. Two designs for the tracing effect:

- ``independent``: drawn afresh per (fact, layer);
- ``fact_level``: one value per fact, the same at every layer (tracing curves that differ in
  height between facts, as real ones do).

For each design and number of facts, prints how often each test rejects at alpha (a valid test
rejects about alpha of the time): the paper's nested F-test, the fact-clustered Wald test by
wild cluster bootstrap (399 replicates) and on F(q, G - 1) with the CR3 (cluster jackknife) and
CR1 covariances, and the fact-level permutation test (199 permutations); then the
mean and 5/95% quantiles of the cross-validated Diff R² and how often its interval lies above 0.

    python benchmarks/sim_analysis_test_size.py [--sims 200] [--facts 30 100 652] [--layers 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from locedit.analysis.regression import fit_cell
from locedit.analysis.robust import cluster_wald, cv_r2_diff, permutation_r2_diff


def simulate(seed: int, G: int, L: int, fact_level: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u, xc = rng.normal(0, 1, G), rng.uniform(0, 1, G)
    case, layer = np.repeat(np.arange(G), L), np.tile(np.arange(L), G)
    x = xc[case] if fact_level else rng.uniform(0, 1, G * L)
    y = 0.1 * layer + 0.3 * u[case] + 0.05 * rng.normal(size=G * L)
    return pd.DataFrame({"y": y, "x": x, "layer": layer, "case_id": case})


def null_cell(d: pd.DataFrame, seed: int) -> dict:
    wald, cv = cluster_wald(d, 399, [seed]), cv_r2_diff(d, 5, 10, [seed])
    return {
        "F-test (paper)": fit_cell(d)["f_pvalue"],
        "wild bootstrap": wald["wald_pvalue_wild"],
        "CR3 Wald": wald["wald_pvalue_cr3"],
        "CR1 Wald": wald["wald_pvalue_cluster"],
        "permutation": permutation_r2_diff(d, 199, [seed])["perm_pvalue"],
        "cv_r2_diff": cv["cv_r2_diff"],
        "cv_above_0": cv["cv_r2_diff_ci_low"] > 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--facts", type=int, nargs="+", default=[30, 100, 652])
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.05)
    a = ap.parse_args()
    tests = ["F-test (paper)", "wild bootstrap", "CR3 Wald", "CR1 Wald", "permutation"]
    print(f"{a.sims} null cells per row, {a.layers} layers; rejection rate at alpha = {a.alpha}")
    print("| tracing effect | facts | " + " | ".join(tests) + " | CV Diff mean [5%, 95%] | CV CI > 0 |")
    print("|---" * (len(tests) + 4) + "|")
    for design in ("independent", "fact_level"):
        for G in a.facts:
            r = pd.DataFrame(
                [null_cell(simulate(s, G, a.layers, design == "fact_level"), s) for s in range(a.sims)]
            )
            rates = " | ".join(f"{(r[t] < a.alpha).mean():.3f}" for t in tests)
            lo, hi = np.quantile(r["cv_r2_diff"], [0.05, 0.95])
            print(
                f"| {design} | {G} | {rates} | {r['cv_r2_diff'].mean():.4f} "
                f"[{lo:.4f}, {hi:.4f}] | {r['cv_above_0'].mean():.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
