"""Case-bootstrap of R² (layer, trace, both): vectorised closed form vs refitting OLS per replicate.

``robust.bootstrap_r2`` computes every replicate's R²s from per-layer weighted moments in a few
matrix products; the straightforward baseline resamples facts and refits the three statsmodels
models per replicate. Prints both timings, their ratio, and the largest R² disagreement.

    python benchmarks/bench_analysis_bootstrap.py [n_cases] [replicates]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from locedit.analysis.regression import fit_cell
from locedit.analysis.robust import r2_batch


def make_cell(n_cases: int, n_layers: int = 9, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    case = np.repeat(np.arange(n_cases), n_layers)
    layer = np.tile(np.arange(n_layers), n_cases)
    x = rng.uniform(0, 1, len(case))
    y = np.linspace(1, 0.3, n_layers)[layer] + 0.05 * x + 0.1 * rng.normal(size=len(case))
    return pd.DataFrame({"y": y, "x": x, "layer": layer, "case_id": case})


def main(n_cases: int = 652, replicates: int = 100) -> None:
    d = make_cell(n_cases)
    rng = np.random.default_rng(1)
    counts = rng.multinomial(n_cases, np.full(n_cases, 1 / n_cases), size=replicates)  # [B, G]
    case = d["case_id"].to_numpy()

    t = time.perf_counter()
    fast = r2_batch(
        counts[:, case].astype(float),
        d["x"].to_numpy(),
        d["y"].to_numpy(),
        d["layer"].to_numpy(),
        9,
    )
    t_fast = time.perf_counter() - t

    t = time.perf_counter()
    slow = []
    for b in range(replicates):
        rows = np.repeat(np.arange(len(d)), counts[b, case])
        r = fit_cell(d.iloc[rows].reset_index(drop=True), min_rows=3)
        slow.append((r["r2_layer"], r["r2_trace"], r["r2_both"]))
    t_slow = time.perf_counter() - t
    err = np.max(np.abs(np.array(fast).T - np.array(slow)))
    print(f"{n_cases} facts x 9 layers, {replicates} replicates")
    print(
        f"vectorised: {t_fast:.3f} s   refit OLS: {t_slow:.3f} s   speed-up: {t_slow / t_fast:.0f}x"
    )
    print(f"max |R² difference|: {err:.2e}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
