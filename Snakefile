"""locedit: does localization inform editing?

Results path grammar (one wildcard per directory level):

Shared artefacts live under keys of what made them (locedit.provenance), so that studies share
one only when it is identical and never overwrite another's; results live under the config's names.

    resources/world/{key}/{records.json,corpus.txt}    generated fact world (key: world settings, seed)
    resources/models/toy-{key}/                        tiny GPT-2 trained on it (key: world, toy_model, seed)
    resources/models/{stem}-{sha12}/                   an imported GGUF model (key: the file's content)
    resources/stats/{name}-{key}/                      ROME/MEMIT statistics (key: model, dtype, corpus
                                                       content, editing.stats settings)
    results/{model}/{dataset}/validation/{key}.json    validation report of one candidate input
    results/{model}/{dataset}/validation.json          the published (passing) report: what the
                                                       names stand for, model and dataset file hashes
    results/{model}/{dataset}/records.json             validated CounterFact-shaped records (first dataset.limit)
    results/{model}/{dataset}/facts.parquet            known-fact filter: p_true, p_new, is_correct, ...
    results/{model}/{dataset}/tracing/...              causal tracing / zeroing shards and tracing.parquet
    results/{model}/{dataset}/editing/...              edit shards and edits.parquet
    results/{model}/{dataset}/tuning/...               tuning stage (editing.tuning): candidates, chosen values
    results/{model}/{dataset}/edit_vs_trace.parquet    one row per edit with the tracing effect at its layer
    results/{model}/{dataset}/regression*.csv          regressions (R², F-tests, clustered Wald, bootstrap, permutation)
    results/{model}/{dataset}/analysis/tables/...      the paper's tables (markdown + LaTeX)
    results/{model}/{dataset}/figures/...              seaborn figures (PNG + PDF)
    results/{model}/{dataset}/provenance.json          what the study ran on (written last)
    logs/{rule}/{model}/{dataset}/...                  one log per job
    benchmarks/{rule}/{model}/{dataset}/...            Snakemake benchmark tables of expensive jobs
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tracing.smk"
include: "workflow/rules/editing_stats.smk"
include: "workflow/rules/editing.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/analysis.smk"


# The landing page carries the run's verdict once the run has one (read when --report plans).
LANDING_PAGE = report_landing_page(
    f"{workflow.basedir}/workflow/report/workflow.rst",
    f"{RESULTS}/analysis/tables/{SUMMARY_TABLE}.md",
    ".snakemake/locedit/report_landing.rst",
)


report: LANDING_PAGE


# After every rule exists: model-loading rules hold the resource `gpu`, and the rules edit
# jobs wait on run first (common.smk).
declare_model_gpus()
declare_priorities()


rule all:
    default_target: True
    input:
        data_targets(),
        tracing_targets(),
        editing_targets(),
        tuning_targets(),
        analysis_targets(),
        provenance_targets(),
