"""Inference that respects the design: every fact appears once per edit layer.

The paper's F-test (``regression.fit_cell``) treats the (fact x layer) rows as independent, but a
fact's rows share its tracing curve and its idiosyncrasies, so the effective sample is closer to
the number of facts than the number of rows. Beyond the paper this module adds, per cell:

- ``cluster_wald``: the Both model with a covariance clustered by ``case_id``; a Wald F-test that
  the trace slope and all its layer interactions are zero (the same hypothesis as the paper's
  nested F-test), with G - 1 denominator degrees of freedom (G = number of facts).
- ``bootstrap_r2``: a case-resampling bootstrap (whole facts, all their layers) of R² layer / trace
  / both and of ``r2_diff``, giving percentile confidence intervals.
- ``permutation_r2_diff``: a case-level permutation test: facts' whole tracing curves are shuffled
  across facts, so the null keeps the layer structure and the within-fact dependence; it also
  gives ``r2_diff_null_mean``, the R² gain the L extra parameters buy by chance.

The bootstrap and permutation R²s are computed in closed form from per-layer weighted moments
(``r2_batch``), vectorised over replicates: the Both model is a separate simple regression per
layer, so its SSE is the sum of per-layer SSEs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from locedit.analysis.regression import design

ROBUST_COLUMNS = [
    "wald_f", "wald_df_num", "wald_df_denom", "wald_pvalue_cluster",
    "r2_diff_ci_low", "r2_diff_ci_high", "r2_diff_boot_se",
    "r2_trace_ci_low", "r2_trace_ci_high", "r2_layer_ci_low", "r2_layer_ci_high",
    "perm_pvalue", "r2_diff_null_mean", "r2_diff_excess",
]  # fmt: skip


def r2_batch(w: np.ndarray, x: np.ndarray, y: np.ndarray, layer_idx: np.ndarray, n_layers: int):
    """R² of the layer-only, trace-only and both models under row weights, for many replicates.

    Args:
        w: [B, n] non-negative row weights (bootstrap multiplicities; 0 drops a row).
        x: [B, n] or [n] trace effect per row.
        y: [n] outcome per row.
        layer_idx: [n] layer of each row as 0..n_layers-1.
        n_layers: number of distinct layers.

    Returns:
        (r2_layer, r2_trace, r2_both), each [B]. NaN where the outcome is constant.
    """
    w = np.asarray(w, dtype=float)
    x = np.broadcast_to(np.asarray(x, dtype=float), w.shape)
    onehot = np.zeros((len(y), n_layers))  # [n, L]
    onehot[np.arange(len(y)), layer_idx] = 1.0
    wx, wy = w * x, w * y
    n_l = w @ onehot  # [B, L]
    sx, sy = wx @ onehot, wy @ onehot
    sxx, syy, sxy = (wx * x) @ onehot, (wy * y) @ onehot, (wx * y) @ onehot
    safe_n = np.where(n_l > 0, n_l, 1.0)
    cxx = sxx - sx**2 / safe_n  # centred per-layer moments [B, L]
    cyy = syy - sy**2 / safe_n
    cxy = sxy - sx * sy / safe_n
    N = n_l.sum(1)
    sst = syy.sum(1) - sy.sum(1) ** 2 / N
    sse_layer = np.where(n_l > 0, cyy, 0.0).sum(1)
    slope_ok = cxx > 1e-12 * np.maximum(sxx, 1.0)
    gain = np.where(slope_ok, cxy**2 / np.where(slope_ok, cxx, 1.0), 0.0).sum(1)
    sse_both = sse_layer - gain
    txx = sxx.sum(1) - sx.sum(1) ** 2 / N
    txy = sxy.sum(1) - sx.sum(1) * sy.sum(1) / N
    sse_trace = sst - np.where(txx > 1e-12, txy**2 / np.where(txx > 1e-12, txx, 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        bad = sst <= 1e-12
        r2 = [
            np.where(bad, np.nan, 1 - s / np.where(bad, 1.0, sst))
            for s in (sse_layer, sse_trace, sse_both)
        ]
    return tuple(r2)


def _codes(d: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int, int]:
    case_idx, _ = pd.factorize(d["case_id"], sort=True)
    layer_idx, layers = pd.factorize(d["layer"], sort=True)
    return case_idx, layer_idx, int(case_idx.max()) + 1, len(layers)


def cluster_wald(d: pd.DataFrame) -> dict:
    """Case-clustered Wald F-test that trace_effect and its layer interactions are all zero.

    Args:
        d: ``regression.cell_frame`` rows (``y, x, layer, case_id``).
    """
    out = {
        "wald_f": np.nan,
        "wald_df_num": np.nan,
        "wald_df_denom": np.nan,
        "wald_pvalue_cluster": np.nan,
    }
    groups, _ = pd.factorize(d["case_id"])
    if groups.max() + 1 < 3:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = design(d, "both")  # intercept, L-1 layer dummies, x, L-1 interactions
        res = sm.OLS(d["y"].to_numpy(dtype=float), X).fit(
            cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
        )
        n_layers = d["layer"].nunique()
        idx = np.arange(n_layers, X.shape[1])  # x and its interactions
        R = np.zeros((len(idx), X.shape[1]))
        R[np.arange(len(idx)), idx] = 1.0
        try:
            test = res.wald_test(R, use_f=True, scalar=True)
        except (np.linalg.LinAlgError, ValueError):
            return out
    out.update(
        wald_f=float(test.statistic),
        wald_df_num=float(test.df_num),
        wald_df_denom=float(test.df_denom),
        wald_pvalue_cluster=float(test.pvalue),
    )
    return out


def bootstrap_r2(
    d: pd.DataFrame, replicates: int, seed: int | list[int], confidence: float = 0.95
) -> dict:
    """Case-resampling bootstrap percentile CIs for R² layer / trace and ``r2_diff``.

    ``seed`` is anything ``np.random.default_rng`` takes (an int or a list of ints).
    """
    case_idx, layer_idx, G, L = _codes(d)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=replicates)  # [B, G]
    w = counts[:, case_idx].astype(float)  # [B, n]
    r2_l, r2_t, r2_b = r2_batch(w, d["x"].to_numpy(), d["y"].to_numpy(), layer_idx, L)
    diff = r2_b - r2_l
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def q(a):
        a = a[np.isfinite(a)]
        return (
            (np.nan, np.nan) if len(a) == 0 else tuple(float(v) for v in np.quantile(a, [lo, hi]))
        )

    out = {}
    out["r2_diff_ci_low"], out["r2_diff_ci_high"] = q(diff)
    out["r2_trace_ci_low"], out["r2_trace_ci_high"] = q(r2_t)
    out["r2_layer_ci_low"], out["r2_layer_ci_high"] = q(r2_l)
    out["r2_diff_boot_se"] = float(np.nanstd(diff, ddof=1)) if replicates > 1 else np.nan
    return out


def permutation_r2_diff(d: pd.DataFrame, permutations: int, seed: int | list[int]) -> dict:
    """Case-level permutation test of ``r2_diff``: shuffle whole tracing curves across facts.

    A fact whose permuted partner lacks an edit layer contributes no row at that layer.
    """
    case_idx, layer_idx, G, L = _codes(d)
    X = np.full((G, L), np.nan)  # each fact's tracing curve over the edit layers
    X[case_idx, layer_idx] = d["x"].to_numpy()
    y = d["y"].to_numpy()
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((permutations, G)), axis=1)  # [P, G]
    xp = X[perm[:, case_idx], layer_idx[None, :]]  # [P, n]
    w = np.isfinite(xp).astype(float)
    r2_l, _, r2_b = r2_batch(w, np.nan_to_num(xp), y, layer_idx, L)
    null = r2_b - r2_l
    one = np.ones((1, len(y)))
    ol, _, ob = r2_batch(one, d["x"].to_numpy(), y, layer_idx, L)
    obs = float(ob[0] - ol[0])
    null = null[np.isfinite(null)]
    if len(null) == 0:
        return {"perm_pvalue": np.nan, "r2_diff_null_mean": np.nan, "r2_diff_excess": np.nan}
    return {
        "perm_pvalue": float((1 + np.sum(null >= obs - 1e-12)) / (1 + len(null))),
        "r2_diff_null_mean": float(null.mean()),
        "r2_diff_excess": obs - float(null.mean()),
    }


def robust_cell(
    d: pd.DataFrame, replicates: int, permutations: int, seed: list[int], confidence: float = 0.95
) -> dict:
    """All of the above for one fitted (status ok) cell; ``seed`` is a list of ints."""
    out = dict(cluster_wald(d))
    if replicates > 0:
        out.update(bootstrap_r2(d, replicates, [*seed, 0], confidence))
    if permutations > 0:
        out.update(permutation_r2_diff(d, permutations, [*seed, 1]))
    return {k: out.get(k, np.nan) for k in ROBUST_COLUMNS}


def conclusion_changes(reg: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Cells where the paper's F-test and the clustered / permutation tests disagree at ``alpha``.

    Returns:
        ``reg`` rows with ``sig_f, sig_cluster, sig_perm`` and ``changed`` (F-test significance
        differs from the clustered Wald test or from the permutation test).
    """
    r = reg[reg["status"] == "ok"].copy()
    r["sig_f"] = r["f_pvalue"] < alpha
    r["sig_cluster"] = r["wald_pvalue_cluster"] < alpha
    r["sig_perm"] = r["perm_pvalue"] < alpha
    valid_c, valid_p = r["wald_pvalue_cluster"].notna(), r["perm_pvalue"].notna()
    r["changed"] = (valid_c & (r["sig_f"] != r["sig_cluster"])) | (
        valid_p & (r["sig_f"] != r["sig_perm"])
    )
    return r
