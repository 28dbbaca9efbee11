"""The paper's regressions (paper-spec §8.2; the authors' R notebook cell 24) with statsmodels.

Per condition (variant x method) and outcome metric, on rows = (fact, central edit layer):

- Layer only: ``score ~ C(layer)``                  (edit layer as a categorical variable)
- Trace only: ``score ~ trace_effect``              (simple linear regression)
- Both:       ``score ~ C(layer) * trace_effect``   (a separate intercept and slope per layer)

reporting unadjusted R², ``r2_diff = r2_both - r2_layer``, the nested-model F-test of Both vs
Layer-only (R's ``anova(both, layer)``), and in-sample RMSE / MAE (Table 7). As in the paper, rows
are treated as independent; see ``robust`` for inference that respects the repeated facts.
Degenerate cells never raise: their statistics are NaN and ``status`` says why.

The models are ``statsmodels`` OLS fits on design matrices built here with the treatment coding
that the formula API (``smf.ols("y ~ C(layer) * x")``) and R's ``lm`` use; parsing a formula costs
~15x the fit itself, and a run fits ~1000 cells. ``design`` is tested to give the formula API's
fits exactly.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from locedit.analysis import METRICS

log = logging.getLogger(__name__)

GROUP_KEYS = ["variant", "method"]
STAT_COLUMNS = [
    "n", "n_cases", "n_layers",
    "r2_layer", "r2_trace", "r2_both", "r2_diff",
    "f_stat", "f_df_num", "f_df_denom", "f_pvalue",
    "rmse_layer", "rmse_trace", "rmse_both", "mae_layer", "mae_trace", "mae_both",
    "status",
]  # fmt: skip


def cell_frame(df: pd.DataFrame, score_col: str, trace_col: str) -> pd.DataFrame:
    """The rows of one regression: ``y, x, layer, case_id`` without missing values."""
    y = df[score_col].to_numpy(dtype=float)
    x = df[trace_col].to_numpy(dtype=float)
    ok = np.isfinite(y) & np.isfinite(x)
    return pd.DataFrame(
        {
            "y": y[ok],
            "x": x[ok],
            "layer": df["layer"].to_numpy(dtype=int)[ok],
            "case_id": df["case_id"].to_numpy()[ok],
        }
    )


def degenerate_reason(d: pd.DataFrame, min_rows: int) -> str | None:
    """Why a cell cannot be fitted, or None. Order: too few rows, constant score, one layer,
    constant trace effect."""
    if len(d) < max(min_rows, 3):
        return "too_few_rows"
    if np.ptp(d["y"].to_numpy()) <= 1e-12:
        return "constant_score"
    if d["layer"].nunique() < 2:
        return "single_layer"
    if np.ptp(d["x"].to_numpy()) <= 1e-12:
        return "constant_trace"
    return None


FORMULAS = {"layer": "y ~ C(layer)", "trace": "y ~ x", "both": "y ~ C(layer) * x"}


def design(d: pd.DataFrame, model: str) -> np.ndarray:
    """The design matrix of ``FORMULAS[model]`` (treatment coding, lowest layer as reference).

    Args:
        d: ``cell_frame`` rows (n).
        model: layer | trace | both.

    Returns:
        [n, p] with columns intercept, layer dummies (L-1), x, layer dummies * x (L-1) as used.
    """
    one = np.ones((len(d), 1))
    x = d["x"].to_numpy(dtype=float)[:, None]
    levels = np.unique(d["layer"].to_numpy())
    dummies = (d["layer"].to_numpy()[:, None] == levels[None, 1:]).astype(float)  # [n, L-1]
    if model == "layer":
        return np.hstack([one, dummies])
    if model == "trace":
        return np.hstack([one, x])
    if model == "both":
        return np.hstack([one, dummies, x, dummies * x])
    raise ValueError(f"unknown model {model!r}; expected one of {list(FORMULAS)}")


def ols(d: pd.DataFrame, model: str):
    """statsmodels OLS results of ``FORMULAS[model]`` on one cell."""
    return sm.OLS(d["y"].to_numpy(dtype=float), design(d, model)).fit()


def _errors(res, y: np.ndarray) -> tuple[float, float]:
    resid = y - np.asarray(res.fittedvalues)
    return float(np.sqrt(np.mean(resid**2))), float(np.mean(np.abs(resid)))


def fit_cell(d: pd.DataFrame, min_rows: int = 10) -> dict:
    """Fit the three models on one cell.

    Args:
        d: ``cell_frame`` output (columns ``y, x, layer, case_id``; n rows).
        min_rows: fewer rows than this is a degenerate cell.

    Returns:
        A dict with every ``STAT_COLUMNS`` key.
    """
    out = {k: np.nan for k in STAT_COLUMNS}
    out.update(n=len(d), n_cases=d["case_id"].nunique(), n_layers=d["layer"].nunique())
    reason = degenerate_reason(d, min_rows)
    out["status"] = reason or "ok"
    if reason in ("too_few_rows", "constant_score"):
        return out
    y = d["y"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficient designs are expected in tiny cells
        if reason != "single_layer":
            layer = ols(d, "layer")
            out["r2_layer"] = float(layer.rsquared)
            out["rmse_layer"], out["mae_layer"] = _errors(layer, y)
        if reason == "constant_trace":
            return out
        trace = ols(d, "trace")
        out["r2_trace"] = float(trace.rsquared)
        out["rmse_trace"], out["mae_trace"] = _errors(trace, y)
        if reason == "single_layer":
            return out
        both = ols(d, "both")
        out["r2_both"] = float(both.rsquared)
        out["rmse_both"], out["mae_both"] = _errors(both, y)
        out["r2_diff"] = out["r2_both"] - out["r2_layer"]
        if both.df_resid > 0 and both.df_model > layer.df_model:
            f, p, df_num = both.compare_f_test(layer)
            out.update(
                f_stat=float(f),
                f_pvalue=float(p),
                f_df_num=float(df_num),
                f_df_denom=float(both.df_resid),
            )
        else:
            out["status"] = "no_residual_df"
    return out


def fit_all(
    df: pd.DataFrame,
    trace_col: str = "trace_effect",
    metrics: list[str] | None = None,
    min_rows: int = 10,
) -> pd.DataFrame:
    """``fit_cell`` for every (variant, method, metric).

    Args:
        df: edit_vs_trace rows.
        trace_col: the tracing feature used as ``trace_effect``.
        metrics: keys of ``METRICS`` (default all that have a column in ``df``).

    Returns:
        Columns ``variant, method, metric, feature`` + ``STAT_COLUMNS``.
    """
    metrics = [m for m in (metrics or list(METRICS)) if METRICS[m] in df.columns]
    rows = []
    for (variant, method), g in df.groupby(GROUP_KEYS, sort=True):
        for metric in metrics:
            res = fit_cell(cell_frame(g, METRICS[metric], trace_col), min_rows)
            rows.append(
                {
                    "variant": variant,
                    "method": method,
                    "metric": metric,
                    "feature": trace_col,
                    **res,
                }
            )
    cols = ["variant", "method", "metric", "feature"] + STAT_COLUMNS
    return pd.DataFrame(rows, columns=cols)


def pearson(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict:
    """Pearson r with its two-sided t-test p-value (R's ``cor.test``) and a Fisher-z CI.

    Args:
        x, y: [n] paired values without NaN.
    """
    n = len(x)
    out = {
        "n": n,
        "rho": np.nan,
        "p_value": np.nan,
        "rho_ci_low": np.nan,
        "rho_ci_high": np.nan,
        "slope": np.nan,
        "status": "ok",
    }
    if n < 3:
        out["status"] = "too_few_rows"
        return out
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy = float(xc @ xc), float(yc @ yc)
    if sxx <= 1e-12 or syy <= 1e-12:
        out["status"] = "constant_trace" if sxx <= 1e-12 else "constant_score"
        return out
    r = float(np.clip((xc @ yc) / np.sqrt(sxx * syy), -1.0, 1.0))
    t = r * np.sqrt((n - 2) / max(1 - r * r, 1e-300))
    out.update(rho=r, p_value=float(2 * stats.t.sf(abs(t), n - 2)), slope=float((xc @ yc) / sxx))
    if n > 3:
        z, se = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1 / np.sqrt(n - 3)
        q = stats.norm.ppf(0.5 + confidence / 2)
        out.update(rho_ci_low=float(np.tanh(z - q * se)), rho_ci_high=float(np.tanh(z + q * se)))
    return out


def layer_correlations(
    df: pd.DataFrame, features: list[str], metrics: list[str] | None = None
) -> pd.DataFrame:
    """Per edit layer: Pearson correlation of each metric with each tracing feature (Figs 4, 15-22).

    Returns:
        Columns ``variant, method, metric, feature, layer, n, rho, p_value, rho_ci_low,
        rho_ci_high, slope, status``.
    """
    metrics = [m for m in (metrics or list(METRICS)) if METRICS[m] in df.columns]
    features = [f for f in features if f in df.columns]
    rows = []
    for (variant, method, layer), g in df.groupby(GROUP_KEYS + ["layer"], sort=True):
        cols = {c: g[c].to_numpy(dtype=float) for c in features + [METRICS[m] for m in metrics]}
        for feature in features:
            for metric in metrics:
                x, y = cols[feature], cols[METRICS[metric]]
                ok = np.isfinite(x) & np.isfinite(y)
                rows.append(
                    {
                        "variant": variant,
                        "method": method,
                        "metric": metric,
                        "feature": feature,
                        "layer": int(layer),
                        **pearson(x[ok], y[ok]),
                    }
                )
    cols = ["variant", "method", "metric", "feature", "layer", "n", "rho", "p_value",
            "rho_ci_low", "rho_ci_high", "slope", "status"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)
