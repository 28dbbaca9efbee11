"""The answer in words: "does localization inform editing on this model?", written from the run's
own numbers (never by hand), for the summary table, the report's front page and the README.

The test that leads is the gain of tracing on held-out facts (fact-level cross-validation of the
paper's regressions): a fact's edits share its tracing curve, so in-sample R² gains and tests that
count edits as independent overstate the evidence, and a localizer is only useful to an editor
if it predicts facts it was not fitted on. The caveat that matters most is how much the
localization varies between facts: if the tracing peak sits at one layer for nearly every fact,
tracing has nothing to tell the facts apart with, and "tracing adds little" is close to built in.
"""

from __future__ import annotations

import pandas as pd

from locedit.analysis import METHOD_LABELS, VARIANT_LABELS
from locedit.registry.kinds import TRACE_KINDS

#: Shares of conditions whose held-out gain is reliably positive, and the answer they give.
ANSWERS = ((0.0, "No"), (0.2, "Barely"), (0.5, "In part"), (1.0, "Mostly yes"))
#: A peak layer shared by at least these shares of facts: tracing varies little / barely between
#: facts.
LITTLE_VARIATION, NO_VARIATION = 0.5, 0.8


def _label(row) -> str:
    v, m = row["variant"], row["method"]
    return f"{VARIANT_LABELS.get(v, v)} with {METHOD_LABELS.get(m, m)}"


def localizer_label(kind: str, window: int) -> str:
    """The regressions' localizer in words (``MLP tracing (window 5)``)."""
    name = TRACE_KINDS[kind].label if kind in TRACE_KINDS else kind
    return f"{name} tracing (window {window})"


def _answer(share: float) -> str:
    for bound, word in ANSWERS:
        if share <= bound:
            return word
    return ANSWERS[-1][1]


def peak_variation(edits: pd.DataFrame) -> tuple[int, float, int, int] | None:
    """(modal peak layer, share of facts there, distinct peak layers, facts) of the tracing
    run the regressions use (``peak_layer`` per fact in ``edit_vs_trace``)."""
    if "peak_layer" not in edits or edits["peak_layer"].isna().all():
        return None
    peaks = edits.groupby("case_id")["peak_layer"].first().dropna().astype(int)
    counts = peaks.value_counts()
    return int(counts.index[0]), float(counts.iloc[0] / len(peaks)), int(len(counts)), int(len(peaks))


def effect_outlier(edits: pd.DataFrame, factor: float = 10.0) -> tuple[int, float, float] | None:
    """``(case_id, its largest |trace_effect|, every other fact's largest)`` when one fact's
    tracing effect exceeds ``factor`` × every other's (and 10 in absolute terms), else None."""
    if "trace_effect" not in edits or edits["trace_effect"].isna().all():
        return None
    per_fact = edits.groupby("case_id")["trace_effect"].apply(lambda x: x.abs().max()).dropna()
    if len(per_fact) < 2:
        return None
    ranked = per_fact.sort_values(ascending=False)
    top, rest = float(ranked.iloc[0]), float(ranked.iloc[1])
    if top > 10 and top > factor * rest:
        return int(ranked.index[0]), top, rest
    return None


def verdict(reg: pd.DataFrame, edits: pd.DataFrame, alpha: float, model: str, trace: str) -> str:
    """One paragraph (plain text, no markup) answering the study's question for this run.

    Args:
        reg: ``regression.csv`` (the rewrite rows are read).
        edits: ``edit_vs_trace.parquet`` (facts, edits and each fact's ``peak_layer``).
        alpha: the significance level of the fact-aware tests.
        model: the model's name, as the results path names it.
        trace: the localizer the regressions use, in words (``MLP tracing, window 5``).
    """
    rw = reg[(reg["metric"] == "rewrite") & (reg["status"] == "ok")].reset_index(drop=True)
    if rw.empty:
        return (f"Does localization inform editing on {model}? This run cannot say: no editing "
                "problem and method had enough known facts to fit the regressions.")
    n = len(rw)
    above = rw[rw["cv_r2_diff_ci_low"] > 0]
    best = rw.loc[rw["cv_r2_diff"].idxmax()]
    wild = int((rw["wald_pvalue_wild"] < alpha).sum())
    f_test = int((rw["f_pvalue"] < alpha).sum())
    # An R² gain outside [-1, 1] on held-out facts means the folds' scores barely vary: the
    # cross-validation cannot judge, and the fact-clustered test leads instead.
    cv_ok = bool(rw["cv_r2_diff"].between(-1, 1).all())
    answer = _answer((len(above) if cv_ok else wild) / n)
    where = (": " + "; ".join(_label(r) for _, r in above.iterrows())) if len(above) else ""
    text = [
        f"Does localization inform editing on {model}? {answer}.",
        f"Across {n} conditions (a condition is one editing problem edited by one method; "
        f"{edits['case_id'].nunique()} known facts, {len(edits):,} edits), the layer edited alone "
        f"explains on average R² {rw['r2_layer'].mean():.3f} of the rewrite score (how far an edit "
        f"moves probability to the new object). Adding {trace} at that layer raises R² by "
        f"{rw['r2_diff'].mean():.3f} on average (the paper's Diff), against "
        f"{rw['r2_diff_null_mean'].mean():.3f} expected by chance (facts' tracing curves shuffled).",
        "The test that leads is that gain on held-out facts (fact-level cross-validation): a fact's "
        "edits share its tracing curve, so in-sample R² and tests that count edits as independent "
        "overstate the evidence, and a localizer helps an editor only if it predicts new facts.",
    ]
    if cv_ok:
        text.append(
            f"On held-out facts the median gain is {rw['cv_r2_diff'].median():.3f}; the largest is "
            f"{best['cv_r2_diff']:.3f} (95% interval {best['cv_r2_diff_ci_low']:.3f} to "
            f"{best['cv_r2_diff_ci_high']:.3f}, {_label(best)}), and the interval lies above zero "
            f"in {len(above)} of {n} conditions{where}."
        )
    else:
        text.append(
            f"Here the held-out gains are not meaningful (median {rw['cv_r2_diff'].median():.3g}, "
            "outside the range an R² gain can take when the held-out scores vary): the answer "
            "follows the fact-clustered test below instead."
        )
        if (outlier := effect_outlier(edits)) is not None:
            cid, top, rest = outlier
            text.append(f"A likely cause: the tracing effect of fact {cid} reaches {top:,.0f}, where "
                        f"every other fact's stays below {rest:.3g} (a fractional effect divides by "
                        "how much the corruption moves the answer, and its corruption barely did); "
                        "such a fact dominates any fit it is held out from.")
    text.append(
        f"A fact-clustered test (wild cluster bootstrap) finds a gain at p < {alpha} in {wild} of "
        f"{n} conditions; the paper's F-test, which counts edits as independent, in {f_test}."
    )
    var = peak_variation(edits)
    if var is not None:
        layer, share, distinct, facts = var
        spread = (f"the tracing peak lies at layer {layer + 1} (1-indexed) for {100 * share:.0f}% of "
                  f"the {facts} facts ({distinct} distinct peak layers)")
        if share >= NO_VARIATION:
            text.append(f"Caveat: {spread}: localization barely varies between facts here, so it "
                        "has little to predict with, and a null answer is close to built in on "
                        "this model.")
        elif share >= LITTLE_VARIATION:
            text.append(f"Caveat: {spread}: localization varies little between facts here, which "
                        "limits what it can predict.")
        else:
            text.append(f"Localization does vary between facts: {spread}, so tracing had room to "
                        "help.")
    if edits["case_id"].nunique() < 50:
        text.append(f"With {edits['case_id'].nunique()} facts the intervals are wide; read the "
                    "counts as indications.")
    return " ".join(text)
