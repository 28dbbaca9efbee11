# Tracing stage: noise level, Causal Tracing / representation zeroing shards, per-layer effects,
# the tracing-reversal target o_noise, and the two tracing figures.


include: "tracing_functions.smk"


TRACING = config["tracing"]
# The tracing engine: σ is estimated again when it changes, though the estimate imports only
# locedit.noise (every other rule's hash covers just what its script imports).
TRACING_CODE = (
    "src/locedit/tracing/trace.py",
    "src/locedit/tracing/batching.py",
    "src/locedit/tracing/passes.py",
    "src/locedit/kernels.py",
    "src/locedit/noise.py",
    "src/locedit/adapters.py",
    "src/locedit/hooks.py",
)


rule estimate_noise_level:
    input:
        records="results/{model}/{dataset}/records.json",
        model=validated_model_input(),
    output:
        noise="results/{model}/{dataset}/tracing/noise.json",
    log:
        "logs/estimate_noise_level/{model}/{dataset}.log",
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        noise_std=TRACING["noise_std"],
        multiplier=TRACING["noise_multiplier"],
        code=code_hash("workflow/scripts/estimate_noise_level.py", *TRACING_CODE),
    script:
        "../scripts/estimate_noise_level.py"


rule trace_facts:
    input:
        records="results/{model}/{dataset}/records.json",
        facts="results/{model}/{dataset}/facts.parquet",
        noise="results/{model}/{dataset}/tracing/noise.json",
        model=validated_model_input(),
    output:
        grid="results/{model}/{dataset}/tracing/grid/{shard}.parquet",
        facts="results/{model}/{dataset}/tracing/facts/{shard}.parquet",
    log:
        "logs/trace_facts/{model}/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/trace_facts/{model}/{dataset}/{shard}.tsv"
    conda:
        "../../envs/locedit.yaml"
    # One thread per job: shards run in parallel, and oversubscribed torch threads are slower.
    threads: 1
    resources:
        mem_mb=8000,
    params:
        model=model_params(),
        positions=tracing_shard_positions,
        runs=tracing_run_params(),
        samples=TRACING["samples"],
        seed=config["seed"],
        row_budget=TRACING["row_budget"],
        only_correct=TRACING["only_correct"],
        o_noise_max_tokens=TRACING["o_noise_max_tokens"],
        # Per-fact checkpoints (undeclared; a rerun of a killed job resumes from them).
        cache=lambda wildcards: (
            f"results/{wildcards.model}/{wildcards.dataset}/.cache/trace_facts/{wildcards.shard}"
        ),
        code=code_hash("workflow/scripts/trace_facts.py"),
    script:
        "../scripts/trace_facts.py"


rule aggregate_tracing:
    input:
        grids=tracing_shards("grid"),
        facts=tracing_shards("facts"),
    output:
        effects="results/{model}/{dataset}/tracing.parquet",
        grid="results/{model}/{dataset}/tracing/grid.parquet",
        facts="results/{model}/{dataset}/tracing/facts.parquet",
        o_noise="results/{model}/{dataset}/tracing/o_noise.parquet",
    log:
        "logs/aggregate_tracing/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    resources:
        mem_mb=4000,
    params:
        runs=tracing_run_params(),
        effect_definition=TRACING["effect_definition"],
        min_total_effect=TRACING["min_total_effect"],
        code=code_hash("workflow/scripts/aggregate_tracing.py"),
    script:
        "../scripts/aggregate_tracing.py"


rule plot_trace_heatmaps:
    input:
        grid="results/{model}/{dataset}/tracing/grid.parquet",
        facts="results/{model}/{dataset}/tracing/facts.parquet",
    output:
        png=report(
            "results/{model}/{dataset}/figures/tracing_heatmaps.png",
            caption="../report/tracing_heatmaps.rst",
            category="Tracing",
            labels={"figure": "tracing_heatmaps"},
        ),
        pdf="results/{model}/{dataset}/figures/tracing_heatmaps.pdf",
        average=report(
            "results/{model}/{dataset}/figures/tracing_average.png",
            caption="../report/tracing_average.rst",
            category="Tracing",
            labels={"figure": "tracing_average"},
        ),
        average_pdf="results/{model}/{dataset}/figures/tracing_average.pdf",
        average_table="results/{model}/{dataset}/tracing/average_effects.parquet",
    log:
        "logs/plot_trace_heatmaps/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        n_facts=TRACING["heatmap_facts"],
        code=code_hash("workflow/scripts/plot_trace_heatmaps.py"),
    script:
        "../scripts/plot_trace_heatmaps.py"


rule plot_peak_layers:
    input:
        effects="results/{model}/{dataset}/tracing.parquet",
    output:
        png=report(
            "results/{model}/{dataset}/figures/tracing_peak_layers.png",
            caption="../report/tracing_peak_layers.rst",
            category="Tracing",
            labels={"figure": "tracing_peak_layers"},
        ),
        pdf="results/{model}/{dataset}/figures/tracing_peak_layers.pdf",
    log:
        "logs/plot_peak_layers/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        kind=TRACING["peak_run"]["kind"],
        window=TRACING["peak_run"]["window"],
        edit_layers=edit_layers(),
        code=code_hash("workflow/scripts/plot_peak_layers.py"),
    script:
        "../scripts/plot_peak_layers.py"


rule measure_atp_agreement:
    input:
        grid="results/{model}/{dataset}/tracing/grid.parquet",
        effects="results/{model}/{dataset}/tracing.parquet",
        facts="results/{model}/{dataset}/tracing/facts.parquet",
    output:
        table="results/{model}/{dataset}/tracing/atp_agreement.parquet",
        summary="results/{model}/{dataset}/tracing/atp_agreement.md",
        png=report(
            "results/{model}/{dataset}/figures/atp_agreement.png",
            caption="../report/atp_agreement.rst",
            category="Tracing",
            labels={"figure": "atp_agreement"},
        ),
        pdf="results/{model}/{dataset}/figures/atp_agreement.pdf",
    log:
        "logs/measure_atp_agreement/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        runs=tracing_run_params(),
        code=code_hash("workflow/scripts/measure_atp_agreement.py"),
    script:
        "../scripts/measure_atp_agreement.py"
