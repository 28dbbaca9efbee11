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

from locedit.editing.probes import PROBE_METRICS
from locedit.editing.metrics import GEN_METRICS
from locedit.registry import methods, variants

# Outcome metrics regressed on tracing, and the edits.parquet column each one reads; the
# generalisation probes' (NaN unless editing.probes is on) come last, so adding them left the
# other metrics' analysis seeds (locedit.seeds.cell_seed, by position) as they were.
METRICS = {
    "rewrite": "rewrite_score",
    "paraphrase": "paraphrase_score",
    "neighborhood": "neighborhood_score",
    "essence": "essence_score",
    "overall": "overall_score",
    **PROBE_METRICS,
    # Beyond the paper: does the edited model generate the answer (locedit.editing.metrics.
    # generation_scores)? Last, for the same reason as the probes.
    **GEN_METRICS,
}
# Display order and labels of problems and methods: the registry's.
VARIANTS = list(variants.VARIANTS)
METHODS = list(methods.METHODS)
VARIANT_LABELS = {v.name: v.label for v in variants.VARIANTS.values()}
METHOD_LABELS = {m.name: m.label for m in methods.METHODS.values()}
