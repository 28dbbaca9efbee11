"""The headline results, checked by content: the "changes conclusion" column of the
robust-inference table and every row of summary.md, on hand-built regression rows whose
answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from locedit.analysis.tables import robust_table, summary_table

#: (variant, method, F p, wild bootstrap p, CR3 Wald p, CR1 Wald p, permutation p, r2_layer,
#:  r2_diff, chance Diff, out-of-sample Diff)
CELLS = [
    ("error_injection", "rome", 0.001, 0.002, 0.002, 0.001, 0.01, 0.60, 0.030, 0.010, 0.02),  # all
    ("error_injection", "memit", 0.001, 0.300, 0.040, 0.010, 0.01, 0.40, 0.010, 0.008, 0.01),  # wild
    ("tracing_reversal", "rome", 0.200, 0.500, 0.500, 0.500, 0.02, 0.50, 0.002, 0.004, -0.01),  # perm
    ("fact_forcing", "ft-1", 0.010, np.nan, np.nan, np.nan, 0.01, 0.30, 0.020, 0.012, 0.0),  # no Wald
    ("fact_erasure", "ft-5", 0.600, 0.700, 0.040, 0.030, 0.80, 0.20, 0.000, 0.006, -0.02),  # CR only
]


def _reg(metric: str = "rewrite") -> pd.DataFrame:
    rows = [
        dict(variant=v, method=m, metric=metric, status="ok", f_pvalue=f, wald_pvalue_wild=wb,
             wald_pvalue_cr3=w3, wald_pvalue_cluster=w1,
             wald_status="ok" if np.isfinite(wb) else "too_few_clusters",
             perm_pvalue=p, r2_layer=l, r2_diff=d, r2_both=l + d, r2_trace=d,
             r2_diff_null_mean=c, cv_r2_diff=cv, cv_r2_diff_ci_low=cv - 0.015,
             cv_r2_diff_ci_high=cv + 0.015)
        for v, m, f, wb, w3, w1, p, l, d, c, cv in CELLS
    ]
    rows.append({**rows[0], "method": "ft-5", "status": "too_few_rows", "f_pvalue": np.nan})
    return pd.DataFrame(rows)


def test_changes_conclusion_marks_exactly_the_disagreements():
    table = robust_table(_reg(), "rewrite", 0.05)
    assert len(table) == len(CELLS)  # the degenerate cell is left out
    marked = table.loc[table["changes conclusion"] == "yes", "Method"].tolist()
    assert sorted(marked) == sorted(["MEMIT", "ROME"]) and len(marked) == 2
    # ... namely EI MEMIT (Wald) and TR ROME (permutation), not EI ROME
    rows = table.assign(Problem=table["Problem"].replace("", np.nan).ffill())
    yes = set(map(tuple, rows.loc[rows["changes conclusion"] == "yes", ["Problem", "Method"]].values))
    assert len(yes) == 2 and all(p != "Fact Forcing" for p, _ in yes)
    assert table.loc[0, "p (F, paper)"] != "" and table.loc[0, "its 95% CI"].startswith("[")
    assert "too_few_clusters" in table["p (wild cluster bootstrap)"].tolist()  # refusal says why


def _frames(reg: pd.DataFrame) -> dict[str, pd.DataFrame]:
    corr = pd.DataFrame([dict(variant="error_injection", method="rome", metric="rewrite",
                              feature="trace_effect", layer=2, rho=-0.25, p_value=0.03, n=40)])
    conc = pd.DataFrame([dict(n_concentrated_cases=7, n_all_cases=40)])
    return {"main": reg, "concentrated": conc, "layer_correlations": corr}


def test_summary_reports_the_run_s_headline_numbers():
    reg = _reg()
    summary = summary_table(_frames(reg), 0.05, 2, counts={"known facts analysed": 40})
    rows = dict(zip(summary["Quantity"], summary["This run"]))
    assert rows["known facts analysed"] == "40"
    assert rows["conditions fitted (rewrite)"] == "5 of 6"
    ok = reg[reg["status"] == "ok"]
    assert rows["mean Layer R² (rewrite, all conditions)"] == f"{ok['r2_layer'].mean():.3g}"
    assert rows["max Diff R² (rewrite)"].startswith("0.03 (") and "ROME" in rows["max Diff R² (rewrite)"]
    tests = [k for k in rows if k.startswith("cells with") and "CI" not in k]
    assert tests[0] == "cells with wild cluster bootstrap p < 0.05 (fact-aware test)"  # it leads
    assert rows[tests[0]] == "1 of 4"
    assert rows["cells with F-test p < 0.05 (paper's test)"] == "3 of 5"
    assert rows["cells with CR3 clustered Wald p < 0.05"] == "3 of 4"
    assert rows["cells with CR1 clustered Wald p < 0.05"] == "3 of 4"
    assert rows["mean out-of-sample Diff R² (rewrite, fact-level CV)"] == "0"
    assert rows["cells whose out-of-sample Diff CI lies above 0 (rewrite)"] == "1 of 5"
    assert rows["cells with permutation p < 0.05"] == "4 of 5"
    assert rows["cells where significance changes"] == "2 of 5"
    assert rows["concentrated facts (App. B heuristic)"] == "7 of 40"
    key = "ρ(rewrite, trace), ROME EI, layer 3 (1-indexed)"
    assert rows[key].startswith("-0.25 (p = 0.03") and rows[key].endswith("n = 40)")


@pytest.mark.parametrize("alpha, changed", [(0.05, "2 of 5"), (0.5, "1 of 5")])
def test_summary_follows_alpha(alpha, changed):
    rows = dict(summary_table(_frames(_reg()), alpha, None).values)
    assert rows["cells where significance changes"] == changed
    assert not any(k.startswith("ρ(") for k in rows)  # no default layer: no correlation row
