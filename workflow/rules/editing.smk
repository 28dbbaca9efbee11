# Editing stage: essence texts per datapoint shard, method-independent edit inputs per
# (variant, shard), one edit job per (variant, method, central layer, shard), and the collected
# per-edit table edits.parquet.
# Covariance statistics and context templates (ROME/MEMIT) come from editing_stats.smk.


include: "editing_functions.smk"


from snakemake.exceptions import WorkflowError

EDITING = config["editing"]
EDIT_SHARD = EDITING["shard_size"]
# One edit job per layer (layers_per_job: 1, for clusters: the layers run in parallel), or one job
# for every layer of a (variant, method, shard) (null: a job pays ~5 s of start-up on a CPU,
# imports and model loading, which per-layer jobs pay once per layer). The result files are per
# layer either way; so are the checkpoints, so adding a layer recomputes only its edits.
EDIT_LAYER_DIR = "{layer}" if EDITING["layers_per_job"] == 1 else "all"


wildcard_constraints:
    variant="|".join(EDITING["variants"]),
    layer=r"\d+",


rule sample_essence_texts:
    input:
        records="results/{model}/{dataset}/records.json",
        facts="results/{model}/{dataset}/facts.parquet",
        model=validated_model_input(),
    output:
        essence="results/{model}/{dataset}/editing/essence/{shard}.json",
    log:
        "logs/sample_essence_texts/{model}/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/sample_essence_texts/{model}/{dataset}/{shard}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        shard=lambda wildcards: shard_slice(wildcards.shard, EDIT_SHARD),
        essence=EDITING["essence"],
        only_correct=EDITING["only_correct"],
        seed=editing_seed(),
        code=code_hash("workflow/scripts/sample_essence_texts.py"),
    script:
        "../scripts/sample_essence_texts.py"


rule prepare_edit_inputs:
    input:
        unpack(lambda wildcards: edit_tracing_inputs(wildcards.variant)),
        records="results/{model}/{dataset}/records.json",
        facts="results/{model}/{dataset}/facts.parquet",
        essence="results/{model}/{dataset}/editing/essence/{shard}.json",
        model=validated_model_input(),
    output:
        inputs="results/{model}/{dataset}/editing/inputs/{variant}/{shard}.json",
    log:
        "logs/prepare_edit_inputs/{model}/{dataset}/{variant}/{shard}.log",
    benchmark:
        "benchmarks/prepare_edit_inputs/{model}/{dataset}/{variant}/{shard}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        shard=lambda wildcards: shard_slice(wildcards.shard, EDIT_SHARD),
        essence=EDITING["essence"],
        only_correct=EDITING["only_correct"],
        erasure_only_eligible=EDITING["erasure_only_eligible"],
        neighborhood_target=EDITING["neighborhood_target"],
        batch_size=EDITING["batch_size"],
        seed=editing_seed(),
        probes=EDITING["probes"],
        # Per-record checkpoints (undeclared; a rerun of a killed job resumes from them).
        cache=lambda wildcards: (
            f"results/{wildcards.model}/{wildcards.dataset}/.cache/prepare_edit_inputs/"
            f"{wildcards.variant}/{wildcards.shard}"
        ),
        code=code_hash("workflow/scripts/prepare_edit_inputs.py"),
    script:
        "../scripts/prepare_edit_inputs.py"


rule edit_facts:
    input:
        unpack(edit_stats_inputs),
        unpack(edit_replay_inputs),
        unpack(edit_tuning_inputs),
        inputs="results/{model}/{dataset}/editing/inputs/{variant}/{shard}.json",
        model=validated_model_input(),
    output:
        edits=edit_outputs(),
    log:
        f"logs/edit_facts/{{model}}/{{dataset}}/{{variant}}/{{method}}/{EDIT_LAYER_DIR}/{{shard}}.log",
    benchmark:
        f"benchmarks/edit_facts/{{model}}/{{dataset}}/{{variant}}/{{method}}/{EDIT_LAYER_DIR}/{{shard}}.tsv"
    wildcard_constraints:
        method=method_pattern(edit_job_methods(exporting=False)),
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        hparams=lambda wildcards: edit_method_hparams(wildcards.method, wildcards.variant),
        engine=EDITING["engine"],
        layers=edit_job_layers,
        # Per-case checkpoints of each layer (undeclared; a rerun of a killed job resumes from them).
        cache=lambda wildcards: {
            str(layer): (
                f"results/{wildcards.model}/{wildcards.dataset}/.cache/edit_facts/"
                f"{wildcards.variant}/{wildcards.method}/{layer}/{wildcards.shard}"
            )
            for layer in edit_job_layers(wildcards)
        },
        aggregation=EDITING["paraphrase_aggregation"],
        essence=EDITING["essence"],
        batch_size=EDITING["batch_size"],
        code=lambda wildcards: edit_method_code(wildcards.method),
    script:
        "../scripts/edit_facts.py"


# The same job for a method whose per-fact vectors another method replays (ROME's v* for
# r-ROME; locedit.editing.vectors): it also writes them, one file per layer.
use rule edit_facts as edit_facts_exporting_vectors with:
    output:
        edits=edit_outputs(),
        vectors=edit_outputs(suffix=".vectors.safetensors"),
    wildcard_constraints:
        method=method_pattern(edit_job_methods(exporting=True)),


rule collect_edits:
    input:
        shards=edit_shard_paths(),
    output:
        edits=f"results/{{model}}/{{dataset}}/edits.parquet",
    log:
        "logs/collect_edits/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        collapse=EDITING["collapse"],
        code=code_hash("workflow/scripts/collect_edits.py"),
    script:
        "../scripts/collect_edits.py"
