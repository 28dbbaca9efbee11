# Functions of tracing.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def tracing_targets():
    targets = [
        f"{RESULTS}/tracing.parquet",
        f"{RESULTS}/tracing/o_noise.parquet",
        f"{RESULTS}/figures/tracing_heatmaps.png",
        f"{RESULTS}/figures/tracing_average.png",
        f"{RESULTS}/figures/tracing_peak_layers.png",
    ]
    if estimate_pairs(tracing_run_params()):  # an AtP run with its exact run traced
        targets.append(f"{RESULTS}/figures/atp_agreement.png")
    return targets


def tracing_shards(name):
    """Per-shard tracing outputs `name` (grid or facts) of every shard."""
    return expand(
        "results/{{model}}/{{dataset}}/tracing/{name}/{shard}.parquet",
        name=name,
        shard=shard_ids(TRACING["shard_size"]),
    )


def tracing_run_params():
    """The (kind, window) tracing runs as plain dicts."""
    return [{"kind": r["kind"], "window": int(r["window"])} for r in TRACING["runs"]]


def tracing_shard_positions(wildcards):
    """[start, stop) record positions of a tracing shard."""
    return shard_slice(wildcards.shard, TRACING["shard_size"])


def edit_layers():
    """0-indexed edit layers of the editing stage, marked on the peak-layer histogram."""
    return list(config.get("editing", {}).get("layers", []) or [])
