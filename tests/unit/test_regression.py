"""The paper's regressions and the robust inference recover known values on synthetic data."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from locedit.analysis.regression import cell_frame, design, fit_all, fit_cell, ols, pearson
from locedit.analysis.robust import (
    ROBUST_COLUMNS,
    RobustSettings,
    bootstrap_r2,
    cluster_wald,
    cv_r2_diff,
    permutation_r2_diff,
    r2_batch,
    robust_cell,
)

LAYER_EFFECT = np.array([0.0, 0.2, 0.4, 0.6])  # variance 0.05 with equal counts


def make_cell(n_cases=200, slope=0.6, noise=0.1, seed=0, layer_slopes=None, case_sd=0.0):
    """y = layer_effect[l] + slope_l * x + case_sd * u_case + noise * e, x ~ U(0, 1) i.i.d."""
    rng = np.random.default_rng(seed)
    L = len(LAYER_EFFECT)
    slopes = np.full(L, slope) if layer_slopes is None else np.asarray(layer_slopes)
    case = np.repeat(np.arange(n_cases), L)
    layer = np.tile(np.arange(L), n_cases)
    x = rng.uniform(0, 1, len(case))
    u = rng.normal(0, 1, n_cases)[case]
    y = LAYER_EFFECT[layer] + slopes[layer] * x + case_sd * u + noise * rng.normal(size=len(case))
    return pd.DataFrame({"y": y, "x": x, "layer": layer, "case_id": case})


def test_recovers_population_r2():
    # Var(y) = 0.05 (layer) + 0.6^2/12 = 0.03 (trace) + 0.01 (noise) = 0.09.
    res = fit_cell(make_cell(n_cases=4000, seed=1))
    assert res["status"] == "ok"
    assert res["r2_layer"] == pytest.approx(0.05 / 0.09, abs=0.01)
    assert res["r2_trace"] == pytest.approx(0.03 / 0.09, abs=0.01)
    assert res["r2_both"] == pytest.approx(0.08 / 0.09, abs=0.01)
    assert res["r2_diff"] == pytest.approx(0.03 / 0.09, abs=0.01)
    assert res["rmse_both"] == pytest.approx(0.1, abs=0.005)  # the noise sd
    assert res["mae_both"] == pytest.approx(0.1 * np.sqrt(2 / np.pi), abs=0.005)


def test_f_test_matches_explicit_nested_model_formula():
    d = make_cell(n_cases=50, slope=0.1, noise=0.3, seed=2)
    res = fit_cell(d)
    X_l = pd.get_dummies(d["layer"], drop_first=True, dtype=float).assign(c=1.0).to_numpy()
    X_b = np.hstack([X_l, X_l * d["x"].to_numpy()[:, None]])  # per-layer intercept and slope
    sse = [
        np.sum((d["y"] - X @ np.linalg.lstsq(X, d["y"], rcond=None)[0]) ** 2) for X in (X_l, X_b)
    ]
    q, df2 = X_b.shape[1] - X_l.shape[1], len(d) - X_b.shape[1]
    f = ((sse[0] - sse[1]) / q) / (sse[1] / df2)
    assert res["f_stat"] == pytest.approx(f, rel=1e-8)
    assert (res["f_df_num"], res["f_df_denom"]) == (q, df2) == (4, len(d) - 8)
    assert res["f_pvalue"] == pytest.approx(stats.f.sf(f, q, df2), rel=1e-8)


def test_f_test_rejects_a_real_trace_effect_and_not_a_null_one():
    assert fit_cell(make_cell(n_cases=100, slope=0.3, seed=3))["f_pvalue"] < 1e-10
    null_p = [fit_cell(make_cell(n_cases=40, slope=0.0, seed=s))["f_pvalue"] for s in range(1000)]
    assert 0.47 < np.mean(null_p) < 0.53  # ~uniform under the null
    # size 0.05 within 3 binomial sd (0.007) of 1000 draws: a 1.5x over-rejection fails
    assert 0.03 < np.mean(np.array(null_p) < 0.05) < 0.07


@pytest.mark.parametrize("model", ["layer", "trace", "both"])
def test_design_matrices_equal_the_formula_api(model):
    d = make_cell(n_cases=30, seed=4)
    formula = {"layer": "y ~ C(layer)", "trace": "y ~ x", "both": "y ~ C(layer) * x"}[model]
    ref = smf.ols(formula, data=d).fit()
    res = ols(d, model)
    assert res.rsquared == pytest.approx(ref.rsquared, abs=1e-12)
    assert design(d, model).shape[1] == len(ref.params)
    np.testing.assert_allclose(np.sort(res.params), np.sort(ref.params.to_numpy()), atol=1e-10)


@pytest.mark.parametrize(
    "mutate, status",
    [
        (lambda d: d.head(5), "too_few_rows"),
        (lambda d: d.assign(y=0.7), "constant_score"),
        (lambda d: d[d["layer"] == 2], "single_layer"),
        (lambda d: d.assign(x=0.5), "constant_trace"),
    ],
)
def test_degenerate_cells_record_nan_and_a_reason(mutate, status):
    res = fit_cell(mutate(make_cell(n_cases=20, seed=5)), min_rows=10)
    assert res["status"] == status
    assert np.isnan(res["r2_diff"]) and np.isnan(res["f_pvalue"])


def test_fit_all_covers_every_cell_and_metric():
    d = make_cell(n_cases=30, seed=6)
    df = pd.concat(
        [
            d.assign(variant=v, method=m)
            for v in ["error_injection", "fact_forcing"]
            for m in ["rome", "ft-1"]
        ]
    ).rename(columns={"y": "rewrite_score", "x": "trace_effect"})
    df["overall_score"] = df["rewrite_score"] * 0  # constant: degenerate, must not raise
    reg = fit_all(df, "trace_effect", ["rewrite", "overall"])
    assert len(reg) == 8
    assert set(reg.loc[reg["metric"] == "overall", "status"]) == {"constant_score"}
    assert (reg.loc[reg["metric"] == "rewrite", "status"] == "ok").all()


def test_cell_frame_drops_missing_rows():
    df = pd.DataFrame(
        {"s": [0.1, np.nan, 0.3], "t": [0.2, 0.3, np.nan], "layer": [0, 1, 2], "case_id": [1, 2, 3]}
    )
    assert cell_frame(df, "s", "t")["case_id"].tolist() == [1]


def test_r2_batch_with_weights_equals_fits_on_duplicated_rows():
    d = make_cell(n_cases=25, seed=7)
    w = np.random.default_rng(0).integers(0, 3, len(d)).astype(float)
    r_l, r_t, r_b = r2_batch(
        w[None], d["x"].to_numpy(), d["y"].to_numpy(), d["layer"].to_numpy(), 4
    )
    dup = d.loc[d.index.repeat(w.astype(int))].reset_index(drop=True)
    ref = fit_cell(dup)
    assert r_l[0] == pytest.approx(ref["r2_layer"], abs=1e-10)
    assert r_t[0] == pytest.approx(ref["r2_trace"], abs=1e-10)
    assert r_b[0] == pytest.approx(ref["r2_both"], abs=1e-10)


def _f_test(beta, V, R, q, df2):
    rb = R @ beta
    W = rb @ np.linalg.solve(R @ V @ R.T, rb) / q
    return W, stats.f.sf(W, q, df2)


def test_cluster_wald_equals_a_hand_computed_sandwich():
    d = make_cell(n_cases=40, slope=0.05, noise=0.2, case_sd=0.2, seed=8)
    res = cluster_wald(d)
    X, y, g = design(d, "both"), d["y"].to_numpy(), d["case_id"].to_numpy()
    n, k = X.shape
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[g == c].T @ e[g == c], X[g == c].T @ e[g == c]) for c in np.unique(g))
    G = len(np.unique(g))
    V = bread @ meat @ bread * (G / (G - 1)) * ((n - 1) / (n - k))
    R = np.zeros((4, k))
    R[np.arange(4), np.arange(4, 8)] = 1  # x and its 3 interactions
    W, p = _f_test(beta, V, R, 4, G - 1)
    assert res["wald_f"] == pytest.approx(W, rel=1e-6)
    assert (res["wald_df_num"], res["wald_df_denom"]) == (4, G - 1)
    assert res["wald_pvalue_cluster"] == pytest.approx(p, rel=1e-6)


def test_cr3_wald_matches_the_cluster_jackknife_from_its_definition():
    # CR3 = sum over facts of (b_(g) - b)(b_(g) - b)^T, b_(g) refitted without fact g.
    d = make_cell(n_cases=12, slope=0.15, noise=0.2, case_sd=0.2, seed=21)
    X, y, g = design(d, "both"), d["y"].to_numpy(), d["case_id"].to_numpy()
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    loo = np.array([np.linalg.lstsq(X[g != c], y[g != c], rcond=None)[0] for c in np.unique(g)])
    V = (loo - beta).T @ (loo - beta)
    R = np.zeros((4, 8))
    R[np.arange(4), np.arange(4, 8)] = 1
    W, p = _f_test(beta, V, R, 4, 12 - 1)
    res = cluster_wald(d)
    assert res["wald_status"] == "ok"
    assert res["wald_f_cr3"] == pytest.approx(W, rel=1e-8)
    assert res["wald_pvalue_cr3"] == pytest.approx(p, rel=1e-8)
    assert res["wald_pvalue_cr3"] > res["wald_pvalue_cluster"]  # CR1 is the liberal one


def test_wild_cluster_bootstrap_matches_refitting_each_replicate():
    # WCR by definition: y* = Layer-only fit + its residuals times one Rademacher sign per fact;
    # refit the Both model with statsmodels' CR1 covariance and count W* >= W.
    d = make_cell(n_cases=20, slope=0.08, noise=0.2, case_sd=0.2, seed=26)
    X, y, g = design(d, "both"), d["y"].to_numpy(), d["case_id"].to_numpy()
    R = np.zeros((4, 8))
    R[np.arange(4), np.arange(4, 8)] = 1

    def wald(yy):
        fit = sm.OLS(yy, X).fit(cov_type="cluster", cov_kwds={"groups": g}, use_t=True)
        return fit.wald_test(R, use_f=True, scalar=True).statistic

    restricted = sm.OLS(y, X[:, :4]).fit()
    signs = np.random.default_rng([5]).choice([-1.0, 1.0], size=(99, 20))
    boot = [wald(restricted.fittedvalues + v[g] * restricted.resid) for v in signs]
    p = (1 + np.sum(np.array(boot) >= wald(y) * (1 - 1e-12))) / 100
    res = cluster_wald(d, 99, [5])
    assert res["wald_pvalue_wild"] == pytest.approx(p, abs=1e-12)
    assert 0.01 < p < 1  # a p-value the count can actually move


def test_wald_tests_only_identified_slopes():
    # A layer whose trace effect is constant has no identified slope: q = 3, as in the F-test.
    d = make_cell(n_cases=40, slope=0.0, noise=0.2, seed=22)
    d.loc[d["layer"] == 2, "x"] = 0.5
    res, f = cluster_wald(d), fit_cell(d)
    assert res["wald_status"] == "ok"
    assert res["wald_df_num"] == f["f_df_num"] == 3
    keep = [0, 1, 2, 3, 4, 5, 7]  # the layer-2 interaction is 0.5 x its dummy
    X, y, g = design(d, "both")[:, keep], d["y"].to_numpy(), d["case_id"].to_numpy()
    fit = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g}, use_t=True)
    R = np.zeros((3, 7))
    R[np.arange(3), [4, 5, 6]] = 1
    W, p = _f_test(fit.params, fit.cov_params(), R, 3, 40 - 1)
    assert res["wald_f"] == pytest.approx(W, rel=1e-6)
    assert res["wald_pvalue_cluster"] == pytest.approx(p, rel=1e-6)


def test_wald_refuses_when_facts_are_too_few_for_the_slopes():
    # 3 facts cannot identify a clustered covariance of 4 slopes (rank <= G - 1 = 2).
    res = cluster_wald(make_cell(n_cases=3, seed=23))
    assert res["wald_status"] == "too_few_clusters"
    assert np.isnan(res["wald_pvalue_cr3"]) and np.isnan(res["wald_pvalue_cluster"])
    d = make_cell(n_cases=30, seed=24)
    d["x"] = d["layer"] * 0.1  # constant within every layer: no slope identified
    assert cluster_wald(d)["wald_status"] == "no_identified_slope"


def test_cv_r2_diff_matches_refitting_each_fold():
    d = make_cell(n_cases=25, slope=0.3, noise=0.2, seed=25)
    res = cv_r2_diff(d, 5, 1, [7])
    G, case = 25, d["case_id"].to_numpy()
    fold_of_case = np.empty(G, dtype=int)
    fold_of_case[np.random.default_rng([7]).permutation(G)] = np.arange(G) % 5
    fold, y = fold_of_case[case], d["y"].to_numpy()
    sse = {}
    for model in ("layer", "both"):
        pred = np.empty(len(d))
        for k in range(5):
            train, test = fold != k, fold == k
            beta = np.linalg.lstsq(design(d[train], model), y[train], rcond=None)[0]
            pred[test] = design(d[test], model) @ beta
        sse[model] = np.sum((y - pred) ** 2)
    sst = np.sum((y - y.mean()) ** 2)
    assert res["cv_r2_layer"] == pytest.approx(1 - sse["layer"] / sst, abs=1e-10)
    assert res["cv_r2_both"] == pytest.approx(1 - sse["both"] / sst, abs=1e-10)
    assert res["cv_r2_diff"] == pytest.approx((sse["layer"] - sse["both"]) / sst, abs=1e-10)


def test_cv_r2_diff_recovers_a_real_gain_and_is_negative_for_noise():
    strong = cv_r2_diff(make_cell(n_cases=300, seed=9), 5, 10, [0])
    assert strong["cv_r2_diff_ci_low"] < 0.03 / 0.09 < strong["cv_r2_diff_ci_high"]
    assert strong == cv_r2_diff(make_cell(n_cases=300, seed=9), 5, 10, [0])
    null = [
        cv_r2_diff(make_cell(n_cases=30, slope=0, case_sd=0.2, seed=s), 5, 5, [s])
        for s in range(300)
    ]
    gains = np.array([r["cv_r2_diff"] for r in null])
    assert gains.mean() < 0  # the extra slopes cost out-of-sample accuracy
    assert np.mean([r["cv_r2_diff_ci_low"] > 0 for r in null]) < 0.05


def test_bootstrap_r2_ci_covers_the_population_values_and_is_deterministic():
    d = make_cell(n_cases=300, seed=9)
    a = bootstrap_r2(d, 200, [1, 2])
    assert a == bootstrap_r2(d, 200, [1, 2])
    assert a["r2_layer_ci_low"] < 0.05 / 0.09 < a["r2_layer_ci_high"]
    assert a["r2_trace_ci_high"] - a["r2_trace_ci_low"] < 0.1


def test_permutation_test_detects_an_effect_and_keeps_its_size_under_the_null():
    strong = permutation_r2_diff(make_cell(n_cases=60, seed=10), 99, [0])
    assert strong["perm_pvalue"] == pytest.approx(1 / 100)
    assert strong["r2_diff_excess"] > 0.2
    null = [
        permutation_r2_diff(make_cell(n_cases=30, slope=0, seed=s), 99, [s])["perm_pvalue"]
        for s in range(1000)
    ]
    assert 0.47 < np.mean(null) < 0.53
    assert 0.03 < np.mean(np.array(null) <= 0.05) < 0.07  # 3 binomial sd of 1000 draws


def test_permutation_null_mean_is_the_chance_gain_of_the_extra_parameters():
    # With no trace effect, Diff is pure overfitting: about L / (n - 2L) of the residual share.
    d = make_cell(n_cases=50, slope=0.0, noise=0.3, seed=11)
    res = permutation_r2_diff(d, 2000, [0])
    resid_share = 1 - fit_cell(d)["r2_layer"]
    assert res["r2_diff_null_mean"] == pytest.approx(resid_share * 4 / (len(d) - 8), rel=0.1)


def test_robust_cell_returns_every_column():
    out = robust_cell(make_cell(n_cases=20, seed=12), RobustSettings(replicates=20, permutations=20), [0])
    assert list(out) == ROBUST_COLUMNS and out.pop("wald_status") == "ok"
    assert all(np.isfinite(v) for v in out.values())


def test_pearson_matches_scipy_and_handles_constants():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    r, p = stats.pearsonr(x, y)
    out = pearson(x, y)
    assert out["rho"] == pytest.approx(r) and out["p_value"] == pytest.approx(p)
    assert out["rho_ci_low"] < r < out["rho_ci_high"]
    assert pearson(np.ones(10), y[:10])["status"] == "constant_trace"
    assert pearson(x[:2], y[:2])["status"] == "too_few_rows"


def test_wild_bootstrap_of_a_singular_clustered_covariance_is_nan_not_an_error():
    """An outcome constant outside one fact (a probe known for few facts, at its floor value
    elsewhere) leaves the clustered covariance of the slopes exactly singular: no Wald
    statistic to bootstrap, so its p-value is NaN and the other tests still report."""
    from locedit.analysis.cluster import cluster_wald

    rng = np.random.default_rng(0)
    y = np.full(24, 2e-8)
    y[[4, 5]] = [2.578830e-03, 5.186420e-03]
    d = pd.DataFrame(
        {"y": y, "x": rng.random(24), "layer": [0, 2, 4, 7] * 6, "case_id": np.repeat(np.arange(6), 4)}
    )
    out = cluster_wald(d, 99, 0)
    assert np.isnan(out["wald_pvalue_wild"]) and out["wald_status"] == "ok"
    assert 0 <= out["wald_pvalue_cluster"] <= 1
