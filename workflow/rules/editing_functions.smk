# Functions of editing.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def editing_seed():
    return config["seed"] if EDITING["seed"] is None else EDITING["seed"]


def edit_method_hparams(method, variant):
    """`editing.methods.<method>` without `per_variant`, overlaid with its `per_variant.<variant>`."""
    section = dict(EDITING["methods"].get(method) or {})
    per_variant = section.pop("per_variant", None) or {}
    return {**section, **(per_variant.get(variant) or {})}


@cache  # called once per edit job while planning
def edit_method_code(method):
    """Code hash of one method's edit jobs: edit_facts.py and every module it imports, less the
    other methods' own modules (so editing rome.py reruns only ROME and MEMIT jobs)."""
    own = EDIT_METHOD_CODE[method]
    others = {p for paths in EDIT_METHOD_CODE.values() for p in paths} - set(code_files(*own))
    return code_hash("workflow/scripts/edit_facts.py", *own, exclude=others)


def edit_outputs():
    """The edit job's result files: its layer's, or every layer's (`editing.layers_per_job`)."""
    path = "results/{model}/{dataset}/editing/{variant}/{method}/{layer}/{shard}.parquet"
    if EDITING["layers_per_job"] == 1:
        return path
    escaped = path.replace("{", "{{").replace("}", "}}").replace("{{layer}}", "{layer}")
    return expand(escaped, layer=EDITING["layers"])


def edit_job_layers(wildcards):
    """The central layers one edit job edits, in the order of its result files."""
    if EDITING["layers_per_job"] == 1:
        return [int(wildcards.layer)]
    return [int(layer) for layer in EDITING["layers"]]


def edit_shard_paths():
    return expand(
        f"{RESULTS}/editing/{{variant}}/{{method}}/{{layer}}/{{shard}}.parquet",
        variant=EDITING["variants"],
        method=EDITING["run_methods"],
        layer=EDITING["layers"],
        shard=shard_ids(EDIT_SHARD),
    )


def edit_stats_inputs(wildcards):
    """Covariance statistics and context templates for ROME/MEMIT jobs; nothing for FT.

    editing_stats.smk provides `layer_stats_manifest(method, layer)` (the statistics a layer
    needs; one manifest for all layers today) once it is included by the Snakefile.
    """
    if wildcards.method not in EDIT_STATS_METHODS:
        return {}
    stats_fn = globals().get("layer_stats_manifest")
    if stats_fn is None:
        raise WorkflowError(
            "ROME/MEMIT jobs need workflow/rules/editing_stats.smk (layer_stats_manifest); "
            "include it in the Snakefile or drop rome/memit from editing.run_methods"
        )
    stats = sorted({stats_fn(wildcards.method, layer) for layer in edit_job_layers(wildcards)})
    return {
        "stats": stats[0] if len(stats) == 1 else stats,
        "templates": f"{RESULTS}/editing/context_templates.json",
    }


def edit_tracing_inputs(variant):
    """Tracing outputs a variant's edit inputs need: o_noise (tracing reversal), σ (fact
    forcing). The other variants read nothing from tracing, so tracing changes leave them be."""
    if variant == "tracing_reversal":
        return {"o_noise": f"{RESULTS}/tracing/o_noise.parquet"}
    if variant == "fact_forcing":
        return {"noise": f"{RESULTS}/tracing/noise.json"}
    return {}


def editing_targets():
    return [f"{RESULTS}/edits.parquet"]
