# Tuning stage (paper App. A; off by default): every method's hyperparameters chosen per editing
# problem on the first facts at one layer, before the study. When enabled, each edit job reads
# its (variant, method section)'s chosen values (editing_functions.smk: edit_tuning_inputs), so
# changing a grid reruns that cell's tuning and the edit jobs that use it, nothing else.


include: "tuning_functions.smk"


rule tune_hparams:
    input:
        unpack(tuning_stats_inputs),
        inputs=lambda wildcards: expand(
            f"{RESULTS}/editing/inputs/{wildcards.variant}/{{shard}}.json",
            shard=shard_ids(EDIT_SHARD),
        ),
        model=validated_model_input(),
    output:
        candidates="results/{model}/{dataset}/tuning/{variant}/{method}.parquet",
        chosen="results/{model}/{dataset}/tuning/{variant}/{method}.json",
    log:
        "logs/tune_hparams/{model}/{dataset}/{variant}/{method}.log",
    benchmark:
        "benchmarks/tune_hparams/{model}/{dataset}/{variant}/{method}.tsv"
    wildcard_constraints:
        method=method_pattern(tuned_sections(EDITING["run_methods"])),
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        hparams=lambda wildcards: edit_method_hparams(wildcards.method, wildcards.variant),
        grid=lambda wildcards: TUNING["grids"][wildcards.method],
        selection=TUNING["selection"],
        n_facts=TUNING["n_facts"],
        layer=tuning_layer(),
        engine=EDITING["engine"],
        aggregation=EDITING["paraphrase_aggregation"],
        essence=EDITING["essence"],
        batch_size=EDITING["batch_size"],
        code=lambda wildcards: code_hash(
            "workflow/scripts/tune_hparams.py", method_module_path(wildcards.method)
        ),
    script:
        "../scripts/tune_hparams.py"


rule collect_tuning:
    input:
        candidates=tuning_paths("parquet"),
    output:
        table="results/{model}/{dataset}/tuning/candidates.parquet",
        summary="results/{model}/{dataset}/tuning/tuning.md",
    log:
        "logs/collect_tuning/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        selection=TUNING["selection"],
        code=code_hash("workflow/scripts/collect_tuning.py"),
    script:
        "../scripts/collect_tuning.py"
