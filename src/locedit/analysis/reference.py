"""The paper's published GPT-J numbers (Hase et al., NeurIPS 2023), transcribed from paper-spec §9.

Every value is copied as printed (rounded to the paper's precision, including its probable copy
errors, paper-spec §15 item 13). p-values printed as "<1e-4" are stored as ``p_text="<1e-4"`` and
``p_value=1e-4`` (an upper bound, flagged by ``p_is_bound``).

Sources (all GPT-J-6B, CounterFact first 2000 records, 652 known facts; tracing window 5):
- Table 1: R² predicting ROME rewrite score, Error Injection.
- Table 2: the same on the "concentrated tracing effects" subset (74 of 652 points).
- Tables 3-6: R² predicting rewrite / paraphrase / neighborhood / overall score, per problem and
  method.
- Table 7: R², RMSE, MAE of the Layer-only and Trace-only regressions, ROME, CounterFact
  (rewrite R² equals Table 1, so the variant is Error Injection).
- Table 8: as Table 7 on ZSRE (ROME, GPT-J).
"""

from __future__ import annotations

import io

import pandas as pd

from locedit.registry.methods import METHODS

from locedit.registry.variants import VARIANTS

PAPER_MODEL = "GPT-J-6B"
PAPER_DATASET = "CounterFact (first 2000 records, 652 known facts)"

VARIANT_CODES = {v.paper_code: v.name for v in VARIANTS.values()}
METHOD_CODES = {m.paper_code: m.name for m in METHODS.values() if m.paper_code}

# Table 1 and Table 2: metric rewrite, variant error_injection, method rome.
TABLE1 = {"r2_layer": 0.947, "r2_trace": 0.016, "r2_both": 0.948}
TABLE2 = {"r2_layer": 0.927, "r2_trace": 0.02, "r2_both": 0.929, "n_cases": 74, "of_cases": 652}

# Tables 3-6, one line per condition: problem method layer trace both diff p.
_R2_TABLES = {
    "rewrite": """
EI FT1 0.756 0.062 0.758 0.002 <1e-4
EI FT5 0.775 0.055 0.777 0.002 <1e-4
EI ROME 0.947 0.016 0.948 0.001 <1e-4
EI MEMIT 0.677 0.024 0.678 0.001 0.199
TR FT1 0.067 0 0.067 0 0.997
TR FT5 0.751 0.045 0.752 0.001 0.032
TR ROME 0.294 0.017 0.31 0.015 <1e-4
TR MEMIT 0.212 0.036 0.218 0.006 <1e-4
FE FT1 0.643 0.028 0.646 0.003 <1e-4
FE FT5 0.698 0.025 0.70 0.002 <1e-4
FE ROME 0.857 0.019 0.858 0 0.555
FE MEMIT 0.925 0.019 0.925 0 0.669
FA FT1 0.383 0.014 0.393 0.01 <1e-4
FA FT5 0.424 0.01 0.436 0.011 <1e-4
FA ROME 0.88 0.02 0.88 0 0.654
FA MEMIT 0.905 0.018 0.906 0.001 <1e-4
FF FT1 0.697 0.104 0.724 0.027 <1e-4
FF FT5 0.634 0.10 0.666 0.032 <1e-4
FF ROME 0.422 0.004 0.425 0.003 <1e-4
FF MEMIT 0.345 0.041 0.354 0.009 <1e-4
""",
    "paraphrase": """
EI FT1 0.061 0.005 0.063 0.002 0.258
EI FT5 0.036 0.003 0.038 0.001 0.582
EI ROME 0.279 0.001 0.303 0.024 <1e-4
EI MEMIT 0.246 0 0.269 0.023 <1e-4
TR FT1 0.004 0.001 0.004 0 0.989
TR FT5 0.001 0 0.002 0.001 0.841
TR ROME 0.01 0 0.012 0.002 0.121
TR MEMIT 0.001 0 0.001 0 0.997
FE FT1 0.046 0.001 0.048 0.002 0.303
FE FT5 0.079 0.007 0.084 0.005 0.004
FE ROME 0.537 0.012 0.539 0.001 0.218
FE MEMIT 0.586 0.015 0.587 0.001 0.184
FA FT1 0.005 0.012 0.022 0.017 <1e-4
FA FT5 0.017 0.013 0.035 0.018 <1e-4
FA ROME 0.24 0.002 0.267 0.027 <1e-4
FA MEMIT 0.236 0.001 0.263 0.026 <1e-4
FF FT1 0.044 0.004 0.046 0.002 0.367
FF FT5 0.023 0.002 0.025 0.002 0.387
FF ROME 0.357 0.01 0.36 0.003 0.003
FF MEMIT 0.095 0.001 0.105 0.01 <1e-4
""",
    "neighborhood": """
EI FT1 0.005 0 0.008 0.002 0.197
EI FT5 0.014 0.001 0.015 0.001 0.55
EI ROME 0.011 0.003 0.015 0.005 0.001
EI MEMIT 0.004 0.001 0.006 0.002 0.154
TR FT1 0.001 0 0.001 0 1
TR FT5 0.001 0 0.002 0.001 0.946
TR ROME 0.001 0 0.002 0.001 0.946
TR MEMIT 0.001 0 0.002 0 0.981
FE FT1 0.01 0 0.014 0.004 0.037
FE FT5 0.01 0 0.013 0.004 0.06
FE ROME 0.04 0.005 0.046 0.006 0.001
FE MEMIT 0.05 0.007 0.059 0.009 <1e-4
FA FT1 0.012 0.009 0.02 0.008 <1e-4
FA FT5 0.016 0.008 0.025 0.009 <1e-4
FA ROME 0.04 0.01 0.05 0.01 <1e-4
FA MEMIT 0.035 0.008 0.044 0.01 <1e-4
FF FT1 0.054 0 0.057 0.003 0.03
FF FT5 0.019 0.001 0.022 0.004 0.011
FF ROME 0.299 0.022 0.311 0.012 <1e-4
FF MEMIT 0.046 0.012 0.066 0.02 <1e-4
""",
    "overall": """
EI FT1 0.642 0.054 0.643 0.002 0.001
EI FT5 0.663 0.047 0.665 0.002 0.001
EI ROME 0.62 0.003 0.629 0.009 <1e-4
EI MEMIT 0.525 0.008 0.534 0.009 <1e-4
TR FT1 0.294 0.025 0.296 0.002 0.054
TR FT5 0.751 0.045 0.752 0.001 0.032
TR ROME 0.296 0.016 0.31 0.014 <1e-4
TR MEMIT 0.21 0.036 0.216 0.006 <1e-4
FE FT1 0.28 0.007 0.283 0.004 0.008
FE FT5 0.119 0 0.124 0.004 0.015
FE ROME 0.718 0.023 0.718 0 0.729
FE MEMIT 0.794 0.025 0.794 0 0.555
FA FT1 0.188 0.003 0.199 0.011 <1e-4
FA FT5 0.224 0.002 0.236 0.013 <1e-4
FA ROME 0.583 0.005 0.59 0.007 <1e-4
FA MEMIT 0.597 0.005 0.607 0.01 <1e-4
FF FT1 0.487 0.056 0.5 0.013 <1e-4
FF FT5 0.459 0.057 0.475 0.017 <1e-4
FF ROME 0.285 0.004 0.291 0.006 <1e-4
FF MEMIT 0.226 0.017 0.227 0.001 0.419
""",
}
R2_TABLE_NUMBER = {"rewrite": 3, "paraphrase": 4, "neighborhood": 5, "overall": 6}

# Tables 7 (CounterFact) and 8 (ZSRE): ROME; metric -> regression -> (r2, rmse, mae).
TABLE7 = {
    "rewrite": {"layer": (0.947, 0.073, 0.02), "trace": (0.016, 0.315, 0.206)},
    "overall": {"layer": (0.618, 0.133, 0.11), "trace": (0.003, 0.216, 0.183)},
}
TABLE8 = {
    "rewrite": {"layer": (0.795, 0.158, 0.072), "trace": (0.042, 0.341, 0.254)},
    "overall": {"layer": (0.654, 0.136, 0.097), "trace": (0.059, 0.223, 0.188)},
}

# Numbers quoted in the text.
TEXT_NUMBERS = {
    "rho_rome_default_layer": -0.13,  # Fig. 4, ROME layer 6 (1-indexed), EI, p < 1e-3
    "rho_unscaled": -0.006,  # Fig. 14
    "max_r2_diff": 0.032,  # FF, FT-5
    "concentrated_fraction": 74 / 652,
}


def r2_table(metric: str) -> pd.DataFrame:
    """One of Tables 3-6 as a tidy frame.

    Returns:
        Columns ``variant, method, r2_layer, r2_trace, r2_both, r2_diff, p_text, p_value,
        p_is_bound, table`` in the paper's row order.
    """
    if metric not in _R2_TABLES:
        raise KeyError(f"the paper has no R² table for metric {metric!r}; have {list(_R2_TABLES)}")
    df = pd.read_csv(
        io.StringIO(_R2_TABLES[metric].strip()),
        sep=" ",
        header=None,
        names=["variant", "method", "r2_layer", "r2_trace", "r2_both", "r2_diff", "p_text"],
        dtype={"p_text": str},
    )
    df["variant"] = df["variant"].map(VARIANT_CODES)
    df["method"] = df["method"].map(METHOD_CODES)
    df["p_is_bound"] = df["p_text"].str.startswith("<")
    df["p_value"] = df["p_text"].str.lstrip("<").astype(float)
    df["table"] = R2_TABLE_NUMBER[metric]
    return df


def all_r2_tables() -> pd.DataFrame:
    """Tables 3-6 stacked, with a ``metric`` column."""
    return pd.concat([r2_table(m).assign(metric=m) for m in _R2_TABLES], ignore_index=True)


def error_table(dataset_format: str = "counterfact") -> pd.DataFrame:
    """Table 7 (CounterFact) or Table 8 (ZSRE): rows ``metric, regression, r2, rmse, mae``."""
    src = TABLE8 if dataset_format == "zsre" else TABLE7
    rows = [
        {"metric": m, "regression": reg, "r2": v[0], "rmse": v[1], "mae": v[2]}
        for m, regs in src.items()
        for reg, v in regs.items()
    ]
    return pd.DataFrame(rows)
