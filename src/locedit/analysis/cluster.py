"""Fact-clustered tests that the trace slopes of the Both model are all zero.

The hypothesis is the paper's nested F-test's (``regression.fit_cell``: Layer x Trace adds
nothing to Layer), tested with covariances clustered by fact, since every fact appears once per
edit layer. Three tests, all on the identified trace columns only (a layer whose trace effect is
constant has no slope to test):

- **Wild cluster restricted bootstrap** (``wald_pvalue_wild``; Cameron, Gelbach & Miller 2008,
  "WCR" in MacKinnon, Nielsen & Webb 2023): the CR1 Wald statistic's null distribution from
  refits on y* = X_r b_r + v_g u_r, the Layer-only fit plus its residuals flipped per fact by
  Rademacher weights (Webb's six-point weights below 13 facts). The one clustered test that kept
  its size in ``benchmarks/sim_analysis_test_size.py`` at 30 facts when tracing effects are a
  property of the fact. Written here: pyfixest and wildboottest bootstrap one coefficient at a
  time, and this hypothesis has q = L of them. Vectorised over replicates: each refit is a
  matrix product.
- **CR3 Wald** (``wald_pvalue_cr3``): the cluster jackknife covariance (pyfixest's CRV3 without
  small-sample factor: sum over facts g of (b_(g) - b)(b_(g) - b)^T; clubSandwich's CR3,
  G/(G-1) times MacKinnon-Nielsen-Webb's CV3) in an F(q, G - 1) test.
- **CR1 Wald** (``wald_f, wald_pvalue_cluster``): statsmodels' cluster covariance (R's
  ``sandwich::vcovCL(type = "HC1")``), F(q, G - 1); liberal with a few dozen facts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from locedit.analysis.regression import design

WALD_COLUMNS = [
    "wald_pvalue_wild", "wald_f_cr3", "wald_pvalue_cr3",
    "wald_f", "wald_df_num", "wald_df_denom", "wald_pvalue_cluster", "wald_status",
]  # fmt: skip

#: Webb's six-point weights (MacKinnon & Webb 2018): Rademacher has only 2^G distinct draws.
WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
WEBB_BELOW = 13


def _design_names(n_layers: int) -> list[str]:
    """Column names of ``design(d, "both")``: intercept, layer dummies, x, interactions."""
    dummies = [f"layer_{i}" for i in range(1, n_layers)]
    return ["Intercept", *dummies, "x", *(f"x_{c}" for c in dummies)]


def wild_cluster_pvalue(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    slopes: list[int],
    reps: int,
    seed: int | list[int],
) -> float:
    """Wild cluster restricted bootstrap p-value of the CR1 Wald test that ``slopes`` are 0.

    Args:
        X: [n, k] full-rank design; y: [n]; groups: [n] cluster codes 0..G-1.
        slopes: the tested columns of X (the rest form the restricted model).
        reps: bootstrap replicates B.
        seed: ``np.random.default_rng`` seed.

    Returns:
        (1 + #{W*_b >= W}) / (B + 1). The CR1 scale factor cancels, so it is left out.
    """
    k = X.shape[1]
    G = int(groups.max()) + 1
    rest = [j for j in range(k) if j not in set(slopes)]
    Xr = X[:, rest]
    u_r = y - Xr @ np.linalg.lstsq(Xr, y, rcond=None)[0]  # [n] Layer-only residuals
    bread = np.linalg.inv(X.T @ X)  # [k, k]
    hat = bread @ X.T  # [k, n]
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])  # [G] cluster row starts

    def wald(w: np.ndarray, strict: bool = False) -> np.ndarray:
        # The restricted fit X_r b_r has zero slopes and no residual, so W(y*) = W(v * u_r).
        beta = w @ hat.T  # [B, k]
        e = (w - beta @ X.T)[:, order]  # [B, n] residuals, rows grouped by cluster
        score = np.add.reduceat(e[:, :, None] * X[order][None], starts, axis=1)  # [B, G, k]
        cov = bread @ np.einsum("bgk,bgl->bkl", score, score) @ bread  # [B, k, k]
        rb = beta[:, slopes]  # [B, q]
        rv = cov[:, slopes][:, :, slopes]  # [B, q, q]
        try:
            sol = np.linalg.solve(rv, rb[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular draw: its generalised statistic (pinv)
            if strict:
                raise
            sol = (np.linalg.pinv(rv) @ rb[..., None])[..., 0]
        return np.einsum("bq,bq->b", rb, sol)

    # A slope carried by too few clusters can leave the observed clustered covariance exactly
    # singular (seen with a probe scored on 6 facts): there is no Wald statistic to bootstrap.
    try:
        observed = wald(y[None], strict=True)[0]
    except np.linalg.LinAlgError:
        return float("nan")
    rng = np.random.default_rng(seed)
    weights = WEBB if G < WEBB_BELOW else np.array([-1.0, 1.0])
    v = rng.choice(weights, size=(reps, G))  # [B, G]
    boot = wald(v[:, groups] * u_r)
    return float((1 + np.sum(boot >= observed * (1 - 1e-12))) / (reps + 1))


def cluster_wald(d: pd.DataFrame, wild_reps: int = 999, seed: int | list[int] = 0) -> dict:
    """Fact-clustered tests (wild bootstrap, CR3 and CR1 Wald) that the trace slopes are 0.

    The Both model is fitted once by pyfixest, which drops columns that are linear combinations
    of earlier ones (a layer whose trace effect is constant has no identified slope) and gives
    the CR3 covariance. statsmodels fits the same identified columns for CR1 and computes both
    Wald F-tests on the q identified trace columns, with G - 1 denominator degrees of freedom;
    ``wild_cluster_pvalue`` bootstraps the CR1 statistic (``wild_reps`` = 0 skips it).

    Args:
        d: ``regression.cell_frame`` rows (``y, x, layer, case_id``).

    Returns:
        ``WALD_COLUMNS``; ``wald_status`` is ok, no_identified_slope, too_few_clusters
        (q > G - 1: the clustered covariance of q slopes is singular) or singular_covariance.
    """
    import pyfixest as pf  # a few seconds to import; only the regression rule needs it

    out = {k: np.nan for k in WALD_COLUMNS}
    groups, _ = pd.factorize(d["case_id"])
    n_clusters = int(groups.max()) + 1
    names = _design_names(d["layer"].nunique())
    X = design(d, "both")  # [n, 2L]
    frame = pd.DataFrame(X[:, 1:], columns=names[1:]).assign(
        y=d["y"].to_numpy(dtype=float), case_id=groups
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyfixest warns about each column it drops
        fit = pf.feols(
            "y ~ " + " + ".join(names[1:]),
            data=frame,
            vcov={"CRV3": "case_id"},
            ssc=pf.ssc(k_adj=False, G_adj=False),
        )
    kept = [names.index(c) for c in fit.coef().index]
    slopes = [i for i, c in enumerate(kept) if names[c].startswith("x")]
    q = len(slopes)
    if q == 0:
        out["wald_status"] = "no_identified_slope"
        return out
    if q > n_clusters - 1:
        out["wald_status"] = "too_few_clusters"
        return out
    R = np.zeros((q, len(kept)))
    R[np.arange(q), slopes] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.OLS(d["y"].to_numpy(dtype=float), X[:, kept]).fit(
            cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
        )
        try:
            cr1 = res.wald_test(R, use_f=True, scalar=True)
            cr3 = res.wald_test(R, cov_p=np.asarray(fit._vcov), use_f=True, scalar=True)
        except (np.linalg.LinAlgError, ValueError):
            out["wald_status"] = "singular_covariance"
            return out
    if wild_reps > 0:
        out["wald_pvalue_wild"] = wild_cluster_pvalue(
            X[:, kept], d["y"].to_numpy(dtype=float), groups, slopes, wild_reps, seed
        )
    out.update(
        wald_f_cr3=float(cr3.statistic),
        wald_pvalue_cr3=float(cr3.pvalue),
        wald_f=float(cr1.statistic),
        wald_df_num=float(cr1.df_num),
        wald_df_denom=float(cr1.df_denom),
        wald_pvalue_cluster=float(cr1.pvalue),
        wald_status="ok",
    )
    return out
