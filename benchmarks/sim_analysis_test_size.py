"""Size of the three tests of "tracing adds nothing beyond layer" under a true null.

Simulates cells of G facts x L edit layers with a layer effect and a fact-level random effect in
the score, and no tracing effect. Two designs for the tracing effect:

- ``independent``: drawn afresh per (fact, layer);
- ``fact_level``: one value per fact, the same at every layer (tracing curves that differ in
  height between facts, as real ones do).

For each design, prints how often the paper's nested F-test, the fact-clustered Wald test and the
fact-level permutation test reject at alpha (a valid test rejects about alpha of the time).

    python benchmarks/sim_analysis_test_size.py [sims] [facts] [layers]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from locedit.analysis.regression import fit_cell
from locedit.analysis.robust import cluster_wald, permutation_r2_diff


def simulate(seed: int, G: int, L: int, fact_level: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u, xc = rng.normal(0, 1, G), rng.uniform(0, 1, G)
    case, layer = np.repeat(np.arange(G), L), np.tile(np.arange(L), G)
    x = xc[case] if fact_level else rng.uniform(0, 1, G * L)
    y = 0.1 * layer + 0.3 * u[case] + 0.05 * rng.normal(size=G * L)
    return pd.DataFrame({"y": y, "x": x, "layer": layer, "case_id": case})


def main(sims: int = 200, G: int = 30, L: int = 5, alpha: float = 0.05) -> None:
    print(f"{sims} null cells of {G} facts x {L} layers; rejection rate at alpha = {alpha}")
    for design in ("independent", "fact_level"):
        p = np.array([
            (fit_cell(d)["f_pvalue"], cluster_wald(d)["wald_pvalue_cluster"],
             permutation_r2_diff(d, 199, [s])["perm_pvalue"])
            for s in range(sims)
            for d in [simulate(s, G, L, design == "fact_level")]
        ])  # fmt: skip
        f, w, perm = (p < alpha).mean(axis=0)
        print(
            f"{design:>12}: F-test (paper) {f:.3f}   clustered Wald {w:.3f}   permutation {perm:.3f}"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
