"""Inference that respects the design: every fact appears once per edit layer.

The paper's F-test (``regression.fit_cell``) treats the (fact x layer) rows as independent, but a
fact's rows share its tracing curve and its idiosyncrasies, so the effective sample is closer to
the number of facts than the number of rows. Beyond the paper this module adds, per cell:

- ``cluster.cluster_wald``: fact-clustered tests that the trace slopes are all zero (the
  paper's nested-F hypothesis): a wild cluster bootstrap, a CR3 and a CR1 Wald test, on the
  identified slopes only (see ``locedit.analysis.cluster``).
- ``cv_r2_diff``: the out-of-sample answer to "does tracing help?": the gain in R² of the Both
  model over Layer-only on facts left out of the fit, by fact-level (grouped) K-fold
  cross-validation, repeated, with a fact-level standard error.
- ``bootstrap_r2``: case-resampling percentile intervals for R² layer and trace.
- ``permutation_r2_diff``: a case-level permutation test: facts' whole tracing curves are shuffled
  across facts, so the null keeps the layer structure and the within-fact dependence; it also
  gives ``r2_diff_null_mean``, the R² gain the L extra parameters buy by chance.

The bootstrap and permutation R²s are computed in closed form from per-layer weighted moments
(``r2_batch``), vectorised over replicates: the Both model is a separate simple regression per
layer, so its SSE is the sum of per-layer SSEs. Cross-validation uses the same per-layer moments
of each training fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from locedit.analysis.cluster import WALD_COLUMNS, cluster_wald

CV_COLUMNS = [
    "cv_r2_layer", "cv_r2_both", "cv_r2_diff", "cv_r2_diff_se",
    "cv_r2_diff_ci_low", "cv_r2_diff_ci_high",
]  # fmt: skip
ROBUST_COLUMNS = [
    *WALD_COLUMNS, *CV_COLUMNS,
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


def bootstrap_r2(
    d: pd.DataFrame, replicates: int, seed: int | list[int], confidence: float = 0.95
) -> dict:
    """Case-resampling bootstrap percentile CIs for R² layer and trace.

    ``seed`` is anything ``np.random.default_rng`` takes (an int or a list of ints). Diff gets no
    bootstrap interval: Diff is bounded below by 0 and biased upward by the L extra slopes, so
    its percentile interval can exclude its own estimate; ``cv_r2_diff`` answers that question.
    """
    case_idx, layer_idx, G, L = _codes(d)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=replicates)  # [B, G]
    w = counts[:, case_idx].astype(float)  # [B, n]
    r2_l, r2_t, _ = r2_batch(w, d["x"].to_numpy(), d["y"].to_numpy(), layer_idx, L)
    lo, hi = (1 - confidence) / 2, 1 - (1 - confidence) / 2

    def q(a):
        a = a[np.isfinite(a)]
        return (
            (np.nan, np.nan) if len(a) == 0 else tuple(float(v) for v in np.quantile(a, [lo, hi]))
        )

    out = {}
    out["r2_trace_ci_low"], out["r2_trace_ci_high"] = q(r2_t)
    out["r2_layer_ci_low"], out["r2_layer_ci_high"] = q(r2_l)
    return out


def _fold_fits(train: np.ndarray, x: np.ndarray, y: np.ndarray, onehot: np.ndarray):
    """Per-layer mean of x and y and OLS slope of y on x, fitted on each fold's training rows.

    Args:
        train: [K, n] 1 for a training row of fold k.
        x, y: [n].
        onehot: [n, L] layer indicator.

    Returns:
        (mean_x, mean_y, slope), each [K, L]; an unidentified slope (x constant) is 0, and a
        layer absent from a fold's training rows gets that fold's overall means.
    """
    n_l = train @ onehot
    sx, sy = (train * x) @ onehot, (train * y) @ onehot
    sxx, sxy = (train * x * x) @ onehot, (train * x * y) @ onehot
    safe = np.where(n_l > 0, n_l, 1.0)
    mx, my = sx / safe, sy / safe
    cxx, cxy = sxx - sx * mx, sxy - sx * my
    ok = cxx > 1e-12 * np.maximum(sxx, 1.0)
    slope = np.where(ok, cxy / np.where(ok, cxx, 1.0), 0.0)
    empty = n_l == 0
    if empty.any():
        tot = train.sum(1, keepdims=True)
        mx = np.where(empty, (train @ x)[:, None] / tot, mx)
        my = np.where(empty, (train @ y)[:, None] / tot, my)
    return mx, my, slope


def cv_r2_diff(
    d: pd.DataFrame, folds: int, repeats: int, seed: int | list[int], confidence: float = 0.95
) -> dict:
    """Out-of-sample gain in R² from adding tracing, by fact-level K-fold cross-validation.

    Facts (all their layers together) are split into ``folds`` folds, ``repeats`` times; each
    fold's rows are predicted by the Layer-only model (per-layer mean) and the Both model
    (per-layer line) fitted on the other folds. With SSE summed over the held-out predictions and
    SST = sum (y - mean y)^2, ``cv_r2_diff = (SSE_layer - SSE_both) / SST``, averaged over
    repeats: positive when tracing predicts edit success for new facts, negative on average when
    it is noise (the extra slopes then cost accuracy; ``benchmarks/sim_analysis_test_size.py``). The standard error treats facts'
    SSE reductions as independent draws (sqrt(G · var) / SST), which ignores the correlation
    that shared training folds induce, so the normal interval is approximate.

    Returns:
        ``CV_COLUMNS`` (NaN when fewer than 2 facts or the score is constant).
    """
    out = {k: np.nan for k in CV_COLUMNS}
    case_idx, layer_idx, G, L = _codes(d)
    x, y = d["x"].to_numpy(dtype=float), d["y"].to_numpy(dtype=float)
    sst = float(np.sum((y - y.mean()) ** 2))
    K = min(folds, G)
    if K < 2 or repeats < 1 or sst <= 1e-12:
        return out
    onehot = np.zeros((len(y), L))
    onehot[np.arange(len(y)), layer_idx] = 1.0
    rng = np.random.default_rng(seed)
    sse_layer = np.zeros(G)  # per fact, summed over repeats
    sse_both = np.zeros(G)
    for _ in range(repeats):
        fold_of_case = np.empty(G, dtype=int)
        fold_of_case[rng.permutation(G)] = np.arange(G) % K  # balanced folds
        fold = fold_of_case[case_idx]  # [n]
        train = (fold[None, :] != np.arange(K)[:, None]).astype(float)  # [K, n]
        mx, my, slope = _fold_fits(train, x, y, onehot)
        pred_layer = my[fold, layer_idx]
        pred_both = pred_layer + slope[fold, layer_idx] * (x - mx[fold, layer_idx])
        sse_layer += np.bincount(case_idx, (y - pred_layer) ** 2, minlength=G)
        sse_both += np.bincount(case_idx, (y - pred_both) ** 2, minlength=G)
    sse_layer, sse_both = sse_layer / repeats, sse_both / repeats
    gain = sse_layer - sse_both  # [G] each fact's SSE reduction
    diff = float(gain.sum() / sst)
    se = float(np.sqrt(G * gain.var(ddof=1)) / sst)
    z = stats.norm.ppf(0.5 + confidence / 2)
    out.update(
        cv_r2_layer=1 - float(sse_layer.sum()) / sst,
        cv_r2_both=1 - float(sse_both.sum()) / sst,
        cv_r2_diff=diff,
        cv_r2_diff_se=se,
        cv_r2_diff_ci_low=diff - z * se,
        cv_r2_diff_ci_high=diff + z * se,
    )
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


@dataclass(frozen=True)
class RobustSettings:
    """The ``analysis`` settings of the inference beyond the paper (config keys in brackets)."""

    replicates: int = 200  #: bootstrap replicates of the R² CIs (bootstrap_replicates)
    permutations: int = 200  #: permutations of the chance Diff (permutations)
    seed: int = 0  #: master seed of every cell's draws (analysis.seed, else seed)
    confidence: float = 0.95  #: level of every interval (confidence)
    cv_folds: int = 5  #: fact-level folds of the out-of-sample Diff (cv_folds)
    cv_repeats: int = 10  #: repeats of the fold split; 0: none (cv_repeats)
    wild_reps: int = 999  #: wild cluster bootstrap replicates (wild_bootstrap_reps)


def robust_cell(d: pd.DataFrame, settings: RobustSettings, seed: list[int]) -> dict:
    """All of the above for one fitted (status ok) cell; ``seed``: the cell's list of ints."""
    s = settings
    out = dict(cluster_wald(d, s.wild_reps, [*seed, 3]))
    if s.cv_repeats > 0:
        out.update(cv_r2_diff(d, s.cv_folds, s.cv_repeats, [*seed, 2], s.confidence))
    if s.replicates > 0:
        out.update(bootstrap_r2(d, s.replicates, [*seed, 0], s.confidence))
    if s.permutations > 0:
        out.update(permutation_r2_diff(d, s.permutations, [*seed, 1]))
    return {k: out.get(k, np.nan) for k in ROBUST_COLUMNS}


def conclusion_changes(reg: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Cells where the paper's F-test and the fact-aware tests disagree at ``alpha``.

    Returns:
        ``reg`` rows with ``sig_f, sig_wild, sig_cr3, sig_cr1, sig_perm`` and ``changed`` (the
        F-test's significance differs from the wild cluster bootstrap's or the permutation
        test's: the two fact-aware tests that hold their size at a few dozen facts).
    """
    r = reg[reg["status"] == "ok"].copy()
    r["sig_f"] = r["f_pvalue"] < alpha
    r["sig_wild"] = r["wald_pvalue_wild"] < alpha
    r["sig_cr3"] = r["wald_pvalue_cr3"] < alpha
    r["sig_cr1"] = r["wald_pvalue_cluster"] < alpha
    r["sig_perm"] = r["perm_pvalue"] < alpha
    valid_c, valid_p = r["wald_pvalue_wild"].notna(), r["perm_pvalue"].notna()
    r["changed"] = (valid_c & (r["sig_f"] != r["sig_wild"])) | (
        valid_p & (r["sig_f"] != r["sig_perm"])
    )
    return r
