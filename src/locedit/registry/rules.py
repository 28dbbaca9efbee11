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
