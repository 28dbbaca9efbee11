"""Analysis stage: join edits with tracing, regressions, robust inference, tables and figures.

Modules:
- ``join``: the per-edit analysis table (``edit_vs_trace.parquet``).
- ``regression``: the paper's OLS models (layer / trace / both), F-tests, RMSE/MAE, correlations.
- ``cluster``: beyond the paper: fact-clustered tests (wild cluster bootstrap, CR3, CR1 Wald).
- ``robust``: beyond the paper: out-of-sample Diff by fact-level CV, bootstrap CIs, permutation
  tests.
- ``tables``: markdown / LaTeX replicas of the paper's tables and the side-by-side comparison.
- ``reference``: the paper's GPT-J numbers.
- ``plots``: seaborn figures (read tables only; never a model).
"""

# Outcome metrics regressed on tracing, and the edits.parquet column each one reads.
METRICS = {
    "rewrite": "rewrite_score",
    "paraphrase": "paraphrase_score",
    "neighborhood": "neighborhood_score",
    "essence": "essence_score",
    "overall": "overall_score",
}
VARIANTS = [
    "error_injection",
    "tracing_reversal",
    "fact_erasure",
    "fact_amplification",
    "fact_forcing",
]
METHODS = ["ft-1", "ft-5", "rome", "memit"]
VARIANT_LABELS = {
    "error_injection": "Error Injection",
    "tracing_reversal": "Tracing Reversal",
    "fact_erasure": "Fact Erasure",
    "fact_amplification": "Fact Amplification",
    "fact_forcing": "Fact Forcing",
}
METHOD_LABELS = {"ft-1": "FT-1", "ft-5": "FT-5", "rome": "ROME", "memit": "MEMIT"}
