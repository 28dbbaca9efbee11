"""Workflow rules by what their jobs need."""

from __future__ import annotations

#: The rules whose jobs load the model for the study: each holds model.gpus_per_job of the
#: resource `gpu` (workflow/rules/common.smk); profiles/slurm gives exactly these a GPU (tested).
MODEL_RULES = (
    "filter_known_facts",
    "estimate_noise_level",
    "trace_facts",
    "generate_context_templates",
    "compute_layer_stats",
    "sample_essence_texts",
    "prepare_edit_inputs",
    "edit_facts",
    "edit_facts_exporting_vectors",
    "tune_hparams",
)

#: The rules of edit jobs (one rule, and its copy for methods whose vectors are replayed).
EDIT_RULES = ("edit_facts", "edit_facts_exporting_vectors")

#: Rules whose jobs edit jobs wait on (directly or through another of them). They start before
#: any other ready job (``declare_priorities`` in workflow/rules/common.smk), so that every edit
#: job is ready early: left to chance, the default run once held back the inputs of two editing
#: problems until the other problems' edit jobs were done and ended on their long ROME jobs.
UNLOCKING_RULES = (
    "generate_fact_world",
    "train_toy_model",
    "download_model",
    "import_gguf_model",
    "download_dataset",
    "validate_inputs",
    "publish_validation",
    "prepare_records",
    "filter_known_facts",
    "estimate_noise_level",
    "trace_facts",
    "aggregate_tracing",
    "generate_context_templates",
    "sample_stats_corpus",
    "compute_layer_stats",
    "sample_essence_texts",
    "prepare_edit_inputs",
    "tune_hparams",
    "collect_tuning",
)

#: Snakemake priorities (among ready jobs the highest starts first; the order of jobs only,
#: never a result or a rerun): unlocking rules, then edit jobs longest first by their method's
#: cost under their problem (locedit.registry.methods), then everything else (aggregation,
#: tables, figures) at 0.
UNLOCKING_PRIORITY = 100
EDIT_PRIORITY = 10


def _edit_cost(method, variant) -> float:
    return method.cost_noised if variant.tracing_input == "noise" else method.cost


def edit_priority(method: str, variant: str) -> int:
    """Priority of the edit jobs of (method, variant): EDIT_PRIORITY plus their cost's rank among
    every registered (method, problem) pair."""
    from locedit.registry.methods import METHODS, get_method
    from locedit.registry.variants import VARIANTS

    costs = sorted({_edit_cost(m, v) for m in METHODS.values() for v in VARIANTS.values()})
    return EDIT_PRIORITY + costs.index(_edit_cost(get_method(method), VARIANTS[variant]))
