# Data stage: the built-in fact world, the toy model, dataset preparation and the known-fact filter.


include: "data_functions.smk"


rule generate_fact_world:
    output:
        records=f"{WORLD_DIR}/records.json",
        corpus=f"{WORLD_DIR}/corpus.txt",
    log:
        f"logs/generate_fact_world/{Path(WORLD_DIR).name}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        world=config["world"],
        seed=config["seed"],
        code=code_hash("workflow/scripts/generate_fact_world.py"),
    script:
        "../scripts/generate_fact_world.py"


rule train_toy_model:
    input:
        corpus=f"{WORLD_DIR}/corpus.txt",
        records=f"{WORLD_DIR}/records.json",
    output:
        config=f"{TOY_MODEL_DIR}/config.json",
    log:
        f"logs/train_toy_model/{Path(TOY_MODEL_DIR).name}.log",
    benchmark:
        f"benchmarks/train_toy_model/{Path(TOY_MODEL_DIR).name}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: workflow.cores
    params:
        toy=config["toy_model"],
        seed=config["seed"],
        made_from=provenance.toy_identity(config),
        code=code_hash("workflow/scripts/train_toy_model.py"),
    script:
        "../scripts/train_toy_model.py"


rule download_model:
    output:
        gguf="resources/gguf/{stem}.gguf",
    log:
        "logs/download_model/{stem}.log",
    wildcard_constraints:
        stem=gguf_download_stem(),
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        name=config["model"]["source"],
        code=code_hash("workflow/scripts/download_model.py"),
    script:
        "../scripts/download_model.py"


rule import_gguf_model:
    input:
        gguf=gguf_input(),
    output:
        config="resources/models/{key}/config.json",
    log:
        "logs/import_gguf_model/{key}.log",
    benchmark:
        "benchmarks/import_gguf_model/{key}.tsv"
    wildcard_constraints:
        key=gguf_import_key(),
    conda:
        "../../envs/locedit.yaml"
    threads: workflow.cores
    params:
        sha256=gguf_sha256(),
        code=code_hash("workflow/scripts/import_gguf_model.py"),
    script:
        "../scripts/import_gguf_model.py"


rule download_dataset:
    output:
        raw=f"resources/data/{DATASET}.json",
    log:
        f"logs/download_dataset/{DATASET}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        url=config["dataset"]["url"],
        sha256=config["dataset"]["sha256"],
        code=code_hash("workflow/scripts/download_dataset.py"),
    script:
        "../scripts/download_dataset.py"


# Validation writes its report under a key of what it checked (the candidate) and publish_validation
# copies a passing one to validation.json, the report every model job reads: a rejected input
# never removes or replaces the published report, so the study it belongs to stays up to date.
rule validate_inputs:
    input:
        raw=dataset_input(),
        model=model_input(),
    output:
        report=validation_candidate(),
    log:
        f"logs/validate_inputs/{{model}}/{{dataset}}/{Path(validation_candidate()).stem}.log",
    conda:
        "../../envs/locedit.yaml"
    params:
        fmt=dataset_format(),
        limit=config["dataset"]["limit"],
        seed=config["seed"],
        model_source=lambda wildcards: model_source(),
        model_revision=config["model"]["revision"],
        # The known-fact filter's generated tokens must fit the context after every prompt.
        generate=config["filter"]["max_new_tokens"],
        # Symmetric token replacement needs a second subject in the dataset.
        str_kinds=replaced_kinds(config["tracing"]["runs"]),
        identity=STUDY_IDENTITY,
        model_dir=lambda wildcards: model_dir(),
        code=code_hash("workflow/scripts/validate_inputs.py"),
    script:
        "../scripts/validate_inputs.py"


rule publish_validation:
    input:
        candidate=validation_candidate(),
    output:
        report="results/{model}/{dataset}/validation.json",
    log:
        "logs/publish_validation/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    shell:
        "cp {input.candidate:q} {output.report:q} 2> {log:q}"


rule prepare_records:
    input:
        raw=dataset_input(),
        report="results/{model}/{dataset}/validation.json",
    output:
        records="results/{model}/{dataset}/records.json",
    log:
        "logs/prepare_records/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        fmt=dataset_format(),
        limit=config["dataset"]["limit"],
        seed=config["seed"],
        code=code_hash("workflow/scripts/prepare_records.py"),
    script:
        "../scripts/prepare_records.py"


rule filter_known_facts:
    input:
        records="results/{model}/{dataset}/records.json",
        model=validated_model_input(),
    output:
        facts="results/{model}/{dataset}/facts.parquet",
    log:
        "logs/filter_known_facts/{model}/{dataset}.log",
    benchmark:
        "benchmarks/filter_known_facts/{model}/{dataset}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: workflow.cores
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        filter=config["filter"],
        only_known=config["tracing"]["only_correct"] or config["editing"]["only_correct"],
        seed=config["seed"],
        code=code_hash("workflow/scripts/filter_known_facts.py"),
    script:
        "../scripts/filter_known_facts.py"
