"""The paper's regressions and the robust inference recover known values on synthetic data."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from locedit.analysis.regression import cell_frame, design, fit_all, fit_cell, ols, pearson
from locedit.analysis.robust import (
    bootstrap_r2,
    cluster_wald,
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
    rb = R @ beta
    W = rb @ np.linalg.solve(R @ V @ R.T, rb) / 4
    assert res["wald_f"] == pytest.approx(W, rel=1e-6)
    assert (res["wald_df_num"], res["wald_df_denom"]) == (4, G - 1)
    assert res["wald_pvalue_cluster"] == pytest.approx(stats.f.sf(W, 4, G - 1), rel=1e-6)


def test_bootstrap_ci_covers_the_true_gain_and_is_deterministic():
    d = make_cell(n_cases=300, seed=9)
    a = bootstrap_r2(d, 200, [1, 2])
    assert a == bootstrap_r2(d, 200, [1, 2])
    assert a["r2_diff_ci_low"] < 0.03 / 0.09 < a["r2_diff_ci_high"]
    assert a["r2_diff_ci_high"] - a["r2_diff_ci_low"] < 0.1
    assert a["r2_layer_ci_low"] < 0.05 / 0.09 < a["r2_layer_ci_high"]


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
    out = robust_cell(make_cell(n_cases=20, seed=12), 20, 20, [0])
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
