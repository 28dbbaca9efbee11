# Functions of tuning.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def tuning_layer():
    """The 0-indexed layer tuned at (`editing.tuning.layer`; null: the median edit layer)."""
    if TUNING["layer"] is not None:
        return int(TUNING["layer"])
    layers = sorted(EDITING["layers"])
    return int(layers[(len(layers) - 1) // 2])


def tuning_paths(ext):
    return expand(
        f"{RESULTS}/tuning/{{variant}}/{{method}}.{ext}",
        variant=EDITING["variants"],
        method=tuned_sections(EDITING["run_methods"]),
    )


def tuning_stats_inputs(wildcards):
    """Statistics and context templates of a tuned method that needs them (ROME, MEMIT)."""
    if not get_method(wildcards.method).needs_stats:
        return {}
    return {
        "stats": layer_stats_manifest(wildcards.method, tuning_layer()),
        "templates": f"{RESULTS}/editing/context_templates.json",
    }


def tuning_targets():
    if not TUNING["enabled"]:
        return []
    return [f"{RESULTS}/tuning/tuning.md"]
