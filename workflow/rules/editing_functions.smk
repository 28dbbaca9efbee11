# Functions of editing.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


TUNING = config["editing"]["tuning"]


def editing_seed():
    return config["seed"] if EDITING["seed"] is None else EDITING["seed"]


def edit_method_hparams(method, variant):
    """`editing.methods.<method>` with its `per_variant.<variant>` merged in (checked, typed, by
    config_problems at planning; the job gets the plain dict, so params compare by value)."""
    return merge_variant(EDITING["methods"].get(get_method(method).config_section), variant)


def method_module_path(method):
    """The registered method's module as a repository path (what its jobs run)."""
    return Path("src", *get_method(method).module.split(".")).with_suffix(".py").as_posix()


def edit_method_code_files(method):
    """What one method's edit jobs run: edit_facts.py, the method's module (from the registry)
    and every module they import; what only other methods' modules import is left out (so
    editing rome.py reruns only ROME jobs, and ft.py only FT-1 and FT-5's)."""
    return code_files("workflow/scripts/edit_facts.py", method_module_path(method))


@cache  # called once per edit job while planning
def edit_method_code(method):
    """Code hash of one method's edit jobs (`edit_method_code_files`)."""
    return code_hash(*edit_method_code_files(method))


def edit_outputs(suffix=".parquet"):
    """The edit job's result (or exported vector) files: its layer's, or every layer's
    (`editing.layers_per_job`)."""
    path = (
        f"results/{{model}}/{{dataset}}/editing/{{variant}}/{{method}}/{{layer}}/{{shard}}{suffix}"
    )
    if EDITING["layers_per_job"] == 1:
        return path
    escaped = path.replace("{", "{{").replace("}", "}}").replace("{{layer}}", "{layer}")
    return expand(escaped, layer=EDITING["layers"])


def edit_job_methods(exporting):
    """Methods with edit jobs (the run methods and the methods whose vectors they replay), those
    whose jobs export vectors (a registered method replays them) or the others."""
    return [m for m in job_methods(EDITING["run_methods"]) if METHODS[m].exports == exporting]


def method_pattern(methods):
    """A wildcard pattern matching exactly ``methods`` (none: a pattern nothing matches)."""
    return "|".join(re.escape(m) for m in methods) if methods else "(?!)"


def edit_replay_inputs(wildcards):
    """The exported vectors an edit job replays (r-ROME: its ROME job's, per layer)."""
    source = get_method(wildcards.method).reuses
    if source is None:
        return {}
    files = [
        f"{RESULTS}/editing/{wildcards.variant}/{source}/{layer}/{wildcards.shard}.vectors.safetensors"
        for layer in edit_job_layers(wildcards)
    ]
    return {"vectors": files}


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
    """Covariance statistics and context templates for methods that need them (ROME/MEMIT).

    editing_stats.smk provides `layer_stats_manifest(method, layer)` (the statistics a layer
    needs; one manifest for all layers today) once it is included by the Snakefile.
    """
    spec = get_method(wildcards.method)
    if not spec.needs_stats or spec.reuses:  # a replay reads its source's u: no statistics
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
    """Tracing outputs a variant's edit inputs need (the registry's `tracing_input`): o_noise
    (tracing reversal), σ (fact forcing). The other variants read nothing from tracing, so
    tracing changes leave them be."""
    paths = {
        "o_noise": f"{RESULTS}/tracing/o_noise.parquet",
        "noise": f"{RESULTS}/tracing/noise.json",
    }
    need = VARIANTS[variant].tracing_input
    return {} if need is None else {need: paths[need]}


def editing_targets():
    return [f"{RESULTS}/edits.parquet"]


def edit_tuning_inputs(wildcards):
    """The chosen values an edit job reads when tuning is enabled (its section's, its variant's)."""
    if not TUNING["enabled"]:
        return {}
    section = get_method(wildcards.method).config_section
    return {"tuned": f"{RESULTS}/tuning/{wildcards.variant}/{section}.json"}
