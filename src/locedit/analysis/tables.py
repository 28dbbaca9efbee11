"""Markdown and LaTeX replicas of the paper's tables, the robust-inference table and the
side-by-side comparison with the paper's GPT-J numbers.

Every builder takes the regression frames of ``study.run_study`` and returns a display frame
(rows in the paper's order: problems EI, TR, FE, FA, FF; methods FT-1, FT-5, ROME, MEMIT) that
``to_markdown`` / ``to_latex`` render.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from locedit.analysis import METHOD_LABELS, VARIANT_LABELS, reference
from locedit.analysis.edit_tables import (
    best_localizers, collapse_table, generation_table, localizer_table, paper_order, peak_table, row_labels,
)
from locedit.analysis.verdict import localizer_label, verdict
from locedit.registry.analysis import HEADLINE

R2_TABLES = {3: "rewrite", 4: "paraphrase", 5: "neighborhood", 6: "overall"}


def fmt_num(v, digits: int = 3) -> str:
    """The paper's style: 3 decimals, trailing zeros dropped; NaN as an en dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{float(v):.{digits}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def fmt_p(p) -> str:
    """p-values as the paper prints them: "<1e-4" when small, else 3 decimals."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.0e}" if p < 1e-3 else fmt_num(p)  # 3 decimals would print 0


def r2_table(reg: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Tables 3-6: Layer | Trace | Both | Diff | p (+ n and status) for one outcome metric."""
    r = paper_order(reg[reg["metric"] == metric])
    out = row_labels(r)
    out["n"] = r["n"].astype(int).to_numpy()
    for col, name in [
        ("r2_layer", "Layer"),
        ("r2_trace", "Trace"),
        ("r2_both", "Both"),
        ("r2_diff", "Diff"),
    ]:
        out[name] = [fmt_num(v) for v in r[col]]
    out["p"] = [fmt_p(v) for v in r["f_pvalue"]]
    out["status"] = r["status"].to_numpy()
    return out.reset_index(drop=True)


def _rome_ei(reg: pd.DataFrame, metric: str = "rewrite") -> pd.Series | None:
    variant, method = HEADLINE
    sel = reg[(reg["variant"] == variant) & (reg["method"] == method) & (reg["metric"] == metric)]
    return None if sel.empty else sel.iloc[0]


def table1(reg: pd.DataFrame, label: str = "ROME") -> pd.DataFrame:
    """Tables 1 and 2: R² of ROME rewrite score, Error Injection."""
    r = _rome_ei(reg)
    vals = [np.nan] * 4 if r is None else [r["n"], r["r2_layer"], r["r2_trace"], r["r2_both"]]
    return pd.DataFrame(
        [
            {
                "Method": label,
                "n": fmt_num(vals[0], 0),
                "Layer": fmt_num(vals[1]),
                "Tracing Effect": fmt_num(vals[2]),
                "Both": fmt_num(vals[3]),
            }
        ]
    )


def table7(reg: pd.DataFrame) -> pd.DataFrame:
    """Table 7 (Table 8 on ZSRE): R², RMSE, MAE of Layer-only and Trace-only, ROME, EI."""
    rows = []
    for metric, label in [("rewrite", "Rewrite Score"), ("overall", "Overall Score")]:
        r = _rome_ei(reg, metric)
        for stat, name in [("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE")]:
            get = (lambda k: np.nan) if r is None else (lambda k: r[k])
            rows.append(
                {
                    "Edit Metric": label if stat == "r2" else "",
                    "Regression Metric": name,
                    "Layer": fmt_num(get(f"{stat}_layer")),
                    "Tracing Effect": fmt_num(get(f"{stat}_trace")),
                }
            )
    return pd.DataFrame(rows)


def windows_table(windows: pd.DataFrame, metric: str = "rewrite") -> pd.DataFrame:
    """Fig. 12 in numbers: Layer R² and Diff per tracing window."""
    r = paper_order(windows[windows["metric"] == metric])
    wide = r.pivot_table(
        index=["variant", "method"], columns="window", values="r2_diff", sort=False
    ).reset_index()
    wide = paper_order(wide)
    out = row_labels(wide)
    for w in [c for c in wide.columns if c not in ("variant", "method")]:
        out[f"Diff (w={w})"] = [fmt_num(v) for v in wide[w]]
    return out.reset_index(drop=True)


def robust_table(reg: pd.DataFrame, metric: str, alpha: float) -> pd.DataFrame:
    """Beyond the paper: in-sample Diff next to the chance gain and its out-of-sample (fact-level
    CV) value; the wild cluster bootstrap p, the paper's F-test p, the CR3 and CR1 clustered Wald
    p and the permutation p; ``changes conclusion`` marks disagreements with the F-test."""
    from locedit.analysis.robust import conclusion_changes

    r = paper_order(conclusion_changes(reg, alpha))
    r = r[r["metric"] == metric]
    out = row_labels(r)
    out["Diff"] = [fmt_num(v) for v in r["r2_diff"]]
    out["chance Diff"] = [fmt_num(v) for v in r["r2_diff_null_mean"]]
    out["Diff out-of-sample"] = [fmt_num(v) for v in r["cv_r2_diff"]]
    out["its 95% CI"] = [
        f"[{fmt_num(a)}, {fmt_num(b)}]"
        for a, b in zip(r["cv_r2_diff_ci_low"], r["cv_r2_diff_ci_high"])
    ]
    status = r["wald_status"].tolist()
    out["p (wild cluster bootstrap)"] = [
        fmt_p(v) if s == "ok" else str(s) for v, s in zip(r["wald_pvalue_wild"], status)
    ]
    out["p (F, paper)"] = [fmt_p(v) for v in r["f_pvalue"]]
    out["p (CR3 Wald)"] = [fmt_p(v) for v in r["wald_pvalue_cr3"]]
    out["p (CR1 Wald)"] = [fmt_p(v) for v in r["wald_pvalue_cluster"]]
    out["p (permutation)"] = [fmt_p(v) for v in r["perm_pvalue"]]
    out["changes conclusion"] = np.where(r["changed"], "yes", "")
    return out.reset_index(drop=True)


def same_setup(model_source: str, dataset_format: str) -> bool:
    """Whether this run is the paper's model (GPT-J) on CounterFact / ZSRE."""
    return "gpt-j" in str(model_source).lower()


def comparison_header(
    model_name: str, model_source: str, dataset_name: str, dataset_format: str
) -> str:
    """The label above the side-by-side table; loud when the models differ."""
    head = (
        f"Paper: {reference.PAPER_MODEL} on {reference.PAPER_DATASET}. "
        f"This run: model `{model_name}` (source `{model_source}`) on dataset `{dataset_name}` "
        f"({dataset_format})."
    )
    if not same_setup(model_source, dataset_format):
        head += (
            "\n\n**Different models (and data): the numbers are not expected to agree.** "
            "Compare the pattern (Layer R² large, Diff small), not the values."
        )
    return head


def comparison_table(reg: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Paper (GPT-J) vs this run for one of Tables 3-6, with Δ = run − paper."""
    paper = reference.r2_table(metric)
    ours = reg[reg["metric"] == metric]
    m = paper.merge(ours, on=["variant", "method"], how="outer", suffixes=("_paper", ""))
    m = paper_order(m)
    out = row_labels(m)
    for col, name in [("r2_layer", "Layer"), ("r2_trace", "Trace"), ("r2_diff", "Diff")]:
        out[f"{name} paper"] = [fmt_num(v) for v in m[f"{col}_paper"]]
        out[f"{name} run"] = [fmt_num(v) for v in m[col]]
    out["p paper"] = m["p_text"].fillna("–").to_numpy()
    out["p run"] = [fmt_p(v) for v in m["f_pvalue"]]
    return out.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str, note: str = "") -> str:
    """A titled GitHub-markdown table."""
    body = df.to_markdown(index=False, disable_numparse=True) if len(df) else "_(no rows)_"
    return f"### {title}\n\n" + (f"{note}\n\n" if note else "") + body + "\n"


_TEX_ESCAPE = {
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "<": r"$<$",
    ">": r"$>$",
    "²": r"$^2$",
    "–": "--",
    "Δ": r"$\Delta$",
    "≫": r"$\gg$",
}


def _tex(s) -> str:
    s = str(s)
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    cols = "l" * 2 + "r" * max(0, len(df.columns) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(_tex(c) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# Every table a run writes (file stem -> what it replicates); the workflow declares these names.
TABLE_NAMES = [
    "table1_rome_rewrite", "table2_concentrated", "table3_rewrite", "table4_paraphrase",
    "table5_neighborhood", "table6_overall", "table7_errors", "table_essence", "table_windows",
    "robust_inference", "comparison_paper", "collapse_rates", "table_localizers",
    "table_generation", "summary",
]  # fmt: skip
#: The run's one-page summary (the README quotes it).
SUMMARY_TABLE = TABLE_NAMES[-1]


def _label(row) -> str:
    v, m = row["variant"], row["method"]
    return f"{VARIANT_LABELS.get(v, v)}, {METHOD_LABELS.get(m, m)}"


def summary_table(
    frames: dict[str, pd.DataFrame],
    alpha: float,
    default_layer: int | None,
    counts: dict | None = None,
) -> pd.DataFrame:
    """Headline numbers of the run (the paper's text claims, measured here).

    ``counts`` (optional): ``{"known facts analysed": n, "edits analysed": m, ...}`` rows first.
    """
    from locedit.analysis.robust import conclusion_changes

    main = frames["main"]
    rw = main[(main["metric"] == "rewrite") & (main["status"] == "ok")]
    rows = [(k, str(v)) for k, v in (counts or {}).items()]
    rows += [
        ("conditions fitted (rewrite)", f"{len(rw)} of {int((main['metric'] == 'rewrite').sum())}")
    ]
    if len(rw):
        top = rw.loc[rw["r2_diff"].idxmax()]
        rows += [
            ("mean Layer R² (rewrite, all conditions)", fmt_num(rw["r2_layer"].mean())),
            (
                "max Diff R² (rewrite)",
                f"{fmt_num(top['r2_diff'])} ({_label(top)})",
            ),
            ("mean Diff R² (rewrite)", fmt_num(rw["r2_diff"].mean())),
            (
                "mean chance Diff R² (rewrite, permutation null)",
                fmt_num(rw["r2_diff_null_mean"].mean()),
            ),
            (
                "mean out-of-sample Diff R² (rewrite, fact-level CV)",
                fmt_num(rw["cv_r2_diff"].mean()),
            ),
            (
                "cells whose out-of-sample Diff CI lies above 0 (rewrite)",
                f"{int((rw['cv_r2_diff_ci_low'] > 0).sum())} of {len(rw)}",
            ),
        ]
    ch = conclusion_changes(main, alpha)
    tested = int((ch["wald_status"] == "ok").sum())
    rows += [
        (
            f"cells with wild cluster bootstrap p < {alpha} (fact-aware test)",
            f"{int(ch['sig_wild'].sum())} of {tested}",
        ),
        (f"cells with permutation p < {alpha}", f"{int(ch['sig_perm'].sum())} of {len(ch)}"),
        (f"cells with F-test p < {alpha} (paper's test)", f"{int(ch['sig_f'].sum())} of {len(ch)}"),
        (f"cells with CR3 clustered Wald p < {alpha}", f"{int(ch['sig_cr3'].sum())} of {tested}"),
        (f"cells with CR1 clustered Wald p < {alpha}", f"{int(ch['sig_cr1'].sum())} of {tested}"),
        ("cells where significance changes", f"{int(ch['changed'].sum())} of {len(ch)}"),
    ]
    if "features" in frames:
        rows += best_localizers(main, frames["features"], alpha)
    conc = frames["concentrated"]
    if len(conc):
        rows.append(
            (
                "concentrated facts (App. B heuristic)",
                f"{int(conc['n_concentrated_cases'].iloc[0])} of "
                f"{int(conc['n_all_cases'].iloc[0])}",
            )
        )
    corr = frames["layer_correlations"]
    if default_layer is not None and len(corr):
        c = corr[
            (corr["variant"] == HEADLINE[0])
            & (corr["method"] == HEADLINE[1])
            & (corr["metric"] == "rewrite")
            & (corr["feature"] == "trace_effect")
            & (corr["layer"] == default_layer)
        ]
        if len(c):
            rows.append(
                (
                    f"ρ(rewrite, trace), ROME EI, layer {default_layer + 1} (1-indexed)",
                    f"{fmt_num(c['rho'].iloc[0])} (p = {fmt_p(c['p_value'].iloc[0])}, "
                    f"n = {int(c['n'].iloc[0])})",
                )
            )
    return pd.DataFrame(rows, columns=["Quantity", "This run"])


def _localizer(meta: dict) -> str:
    if "trace_kind" not in meta:
        return "tracing"
    return localizer_label(meta["trace_kind"], meta["trace_window"])


def build_tables(
    frames: dict[str, pd.DataFrame],
    meta: dict,
    alpha: float,
    default_layer: int | None,
    counts: dict | None = None,
    edits: pd.DataFrame | None = None,
    tracing: pd.DataFrame | None = None,
) -> dict[str, list[tuple[str, pd.DataFrame, str]]]:
    """``{TABLE_NAMES item: [(title, frame, note), ...]}`` for ``write_tables``.

    Args:
        frames: ``study.run_study`` output (read back from the CSVs).
        meta: ``model_name, model_source, dataset_name, dataset_format``, ``trace_kind`` and
            ``trace_window`` (the localizer the regressions use, for the verdict).
        alpha: significance level for the robust-inference comparison.
        default_layer: 0-indexed layer of the headline correlation (Fig. 4), or None.
        counts: extra leading rows of the summary (e.g. facts and edits analysed).
        edits: the analysed edits (``edit_vs_trace``) for the collapse table and the verdict
            (:mod:`locedit.analysis.verdict`, the summary's first paragraph).
        tracing: ``tracing.parquet``, for where each localizer peaks (``table_localizers``).
    """
    main, fmt = frames["main"], meta["dataset_format"]
    t7_num = 8 if fmt == "zsre" else 7
    out = {
        "table1_rome_rewrite": [
            ("Table 1: R² for predicting ROME rewrite score (Error Injection)", table1(main), "")
        ],
        "table2_concentrated": [
            (
                "Table 2: Table 1 on facts with concentrated tracing effects",
                table1(frames["concentrated"]),
                "App. B heuristic; see summary for the count.",
            )
        ],
        "table7_errors": [
            (
                f"Table {t7_num}: regression error metrics (ROME, Error Injection)",
                table7(main),
                "In-sample, as in the paper.",
            )
        ],
        "table_essence": [
            (
                "R² predicting essence score (computed but not tabulated in the paper)",
                r2_table(main, "essence"),
                "",
            )
        ],
        "table_windows": [
            (
                "Fig. 12 in numbers: Diff R² (rewrite) by tracing window",
                windows_table(frames["windows"]),
                "",
            )
        ],
        "robust_inference": [
            (
                f"Beyond the paper: fact-aware inference ({m})",
                robust_table(main, m, alpha),
                "chance Diff: mean Diff when facts' tracing curves are permuted across facts. "
                "Diff out-of-sample: R² gain of Layer x Trace over Layer on held-out facts "
                "(fact-level K-fold cross-validation; CI from the facts' SSE reductions). "
                "Wild cluster bootstrap: the fact-clustered Wald test's null distribution by "
                "flipping facts' residuals; it and the permutation test hold their size at a few "
                "dozen facts, where the CR3 (cluster jackknife) and CR1 Wald tests on "
                "F(q, facts - 1) can be liberal. 'changes conclusion': the paper's F-test and the "
                f"wild bootstrap or permutation test disagree at alpha = {alpha}.",
            )
            for m in ("rewrite", "overall")
        ],
        "collapse_rates": [
            (
                "Beyond the paper: edits that collapse the model (% per edit layer, 0-indexed)",
                collapse_table(edits if edits is not None else pd.DataFrame()),
                "collapsed: the essence texts' perplexity grew by at least "
                "editing.collapse.essence_ppl_ratio (Gupta et al. 2024's model collapse).",
            )
        ],
        "table_localizers": [
            (
                f"Beyond the paper: R² of {m} score with each localisation method in place of tracing",
                localizer_table(main, frames.get("features", pd.DataFrame()), m),
                "Layer: R² of the edit layer alone. Both / Diff: with the localisation feature "
                "added, and the gain. Tracing: exact Causal Tracing; Zeroing: representation "
                "zeroing (App. B); AtP: attribution patching, tracing's first-order estimate "
                "from one backward pass per fact.",
            )
            for m in ("rewrite", "overall")
        ]
        + (
            [(
                "Where each localizer peaks (layers 1-indexed)",
                peak_table(tracing, (meta["trace_kind"], int(meta["trace_window"]))),
                "Per fact, the layer of the largest tracing effect (max over tokens); the last "
                "column: how often a run's peak is the regressions' localizer's. A localizer whose "
                "peak barely varies between facts has little to predict with.",
            )]
            if tracing is not None
            else []
        ),
        "table_generation": [
            (
                "Beyond the paper: does the edited model say it? Teacher-forced vs generated success",
                generation_table(edits if edits is not None else pd.DataFrame()),
                "p(new) > p(old): the teacher-forced success of ROME's efficacy (p(old) > p(new) "
                "for fact erasure). Generated: greedy decoding from the prompt produces the new "
                "answer (fact erasure: no longer produces the old one); paraphrases averaged. "
                "Neighborhood generation kept: the share of neighbourhood prompts whose greedy "
                "answer the edit left as it was. Percent of the row's edits (n).",
            )
        ],
        SUMMARY_TABLE: [
            (
                "Summary of this run",
                summary_table(frames, alpha, default_layer, counts),
                verdict(main, edits, alpha, meta["model_name"], _localizer(meta))
                if edits is not None and "case_id" in edits and len(edits)
                else "",
            )
        ],
    }
    for num, metric in R2_TABLES.items():
        out[f"table{num}_{metric}"] = [
            (f"Table {num}: R² predicting {metric} score", r2_table(main, metric), "")
        ]
    head = comparison_header(
        meta["model_name"], meta["model_source"], meta["dataset_name"], meta["dataset_format"]
    )
    cmp = [
        (f"Table {num} ({metric}): paper vs this run", comparison_table(main, metric), "")
        for num, metric in R2_TABLES.items()
    ]
    paper_err = reference.error_table(fmt)
    run_err = table7(main)
    cmp.append(
        (
            f"Table {t7_num}: paper (R², RMSE, MAE)",
            paper_err.map(lambda v: v if isinstance(v, str) else fmt_num(v)),
            "",
        )
    )
    cmp.append((f"Table {t7_num}: this run", run_err, ""))
    t1p = pd.DataFrame(
        [
            {
                "Method": "ROME",
                "Layer": fmt_num(reference.TABLE1["r2_layer"]),
                "Tracing Effect": fmt_num(reference.TABLE1["r2_trace"]),
                "Both": fmt_num(reference.TABLE1["r2_both"]),
            }
        ]
    )
    cmp.insert(0, ("Table 1: paper", t1p, head))
    cmp.insert(1, ("Table 1: this run", table1(main), ""))
    out["comparison_paper"] = cmp
    return {k: out[k] for k in TABLE_NAMES}


def to_html(sections: list[tuple[str, pd.DataFrame, str]]) -> str:
    """One table file as a standalone HTML page (the Snakemake report shows it)."""
    from html import escape

    parts = []
    for title, df, note in sections:
        parts.append(f"<h3>{escape(title)}</h3>")
        if note:
            parts.append(f"<p>{escape(note)}</p>")
        parts.append(df.to_html(index=False, border=0) if len(df) else "<p><em>(no rows)</em></p>")
    style = "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
    return f"<html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"


def render(sections: list[tuple[str, pd.DataFrame, str]], stem: str) -> tuple[str, str]:
    """(markdown, latex) text of one table file."""
    md = "\n".join(to_markdown(df, title, note) for title, df, note in sections)
    tex = "\n".join(
        to_latex(df, title, f"tab:{stem}-{i}") for i, (title, df, _) in enumerate(sections)
    )
    return md, tex
