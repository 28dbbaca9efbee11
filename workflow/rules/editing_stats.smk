# ROME/MEMIT prerequisites, computed once per model and shared by every edit job:
# context templates sampled from the model, and the second-moment statistics C of the MLP
# down-projection inputs (one corpus pass for all layers; cached under resources/, protected, under
# a key of the model, its precision, the corpus's content and the settings: locedit.provenance).
#
# The statistics are one job whose declared output is a manifest; the per-layer files
# (layer_{l}.npz) lie next to it. The number of layers of a toy model is unknown when the DAG is
# planned, so per-layer outputs cannot be listed; a directory() output would be deleted by
# Snakemake before a rerun, taking the resumable partial sums (partial.pt) with it. With the
# default `layers: all`, adding an edit layer changes nothing upstream.


include: "editing_stats_functions.smk"


from snakemake.exceptions import WorkflowError

EDIT_STATS = config["editing"]["stats"]
EDIT_CONTEXT = config["editing"]["context_templates"]
# Bump when the statistics' computation changes meaning: the protected cache then has to be
# removed by hand (code edits elsewhere in covariance.py must not discard hours of GPU work).
STATS_FORMAT = 1
raise_problems(stats_problems(), CONFIG_ORIGIN)


rule generate_context_templates:
    input:
        model=validated_model_input(),
    output:
        templates="results/{model}/{dataset}/editing/context_templates.json",
    log:
        "logs/generate_context_templates/{model}/{dataset}.log",
    conda:
        "../../envs/locedit.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        model=model_params(),
        templates=EDIT_CONTEXT,
        seed=config["seed"] if EDIT_CONTEXT["seed"] is None else EDIT_CONTEXT["seed"],
        code=code_hash("workflow/scripts/generate_context_templates.py"),
    script:
        "../scripts/generate_context_templates.py"


rule sample_stats_corpus:
    input:
        model=model_input(),
    output:
        corpus=SAMPLED_CORPUS,
    log:
        f"logs/sample_stats_corpus/{Path(SAMPLED_CORPUS).stem}.log",
    benchmark:
        f"benchmarks/sample_stats_corpus/{Path(SAMPLED_CORPUS).stem}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: workflow.cores
    params:
        model=model_params(),
        sampled=EDIT_STATS["sampled"],
        code=code_hash("workflow/scripts/sample_stats_corpus.py"),
    script:
        "../scripts/sample_stats_corpus.py"


rule compute_layer_stats:
    input:
        corpus=stats_corpus(),
        model=model_input(),
    output:
        manifest=protected(f"{layer_stats_dir()}/manifest.json"),
    log:
        f"logs/compute_layer_stats/{Path(layer_stats_dir()).name}.log",
    benchmark:
        f"benchmarks/compute_layer_stats/{Path(layer_stats_dir()).name}.tsv"
    conda:
        "../../envs/locedit.yaml"
    threads: workflow.cores
    resources:
        mem_mb=8000,
    params:
        model=model_params(),
        stats=EDIT_STATS,
        format=STATS_FORMAT,
        identity=stats_identity(),
        world_corpus=EDIT_STATS["corpus"] is None,
        real_model=config["model"]["source"] != "toy",
    script:
        "../scripts/compute_layer_stats.py"
