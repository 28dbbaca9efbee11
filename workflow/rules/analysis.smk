# Analysis stage: join edits with tracing, the paper's regressions (+ fact-aware inference),
# tables and figures. Every rule here reads tables only; none loads a model.


include: "analysis_functions.smk"


from locedit.analysis.tables import SUMMARY_TABLE, TABLE_NAMES

# Table stems: locedit.analysis.tables.TABLE_NAMES; figures: locedit.registry.analysis.FIGURES.
ANALYSIS_TABLES = TABLE_NAMES
# The generalisation probes' table (editing.probes on only).
PROBE_TABLE = "generalisation_probes"


rule join_edits_tracing:
    input:
        edits="results/{model}/{dataset}/edits.parquet",
        tracing="results/{model}/{dataset}/tracing.parquet",
        facts="results/{model}/{dataset}/facts.parquet",
    output:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
    log:
        "logs/join_edits_tracing/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    resources:
        mem_mb=2000,
    params:
        window=config["analysis"]["window"],
        kind=config["analysis"]["trace_kind"],
        concentrated=config["analysis"]["concentrated"],
        erasure_eligible_only=config["analysis"]["erasure_eligible_only"],
        code=code_hash("workflow/scripts/join_edits_tracing.py"),
    script:
        "../scripts/join_edits_tracing.py"


rule fit_regressions:
    input:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
    output:
        main=report(
            "results/{model}/{dataset}/regression.csv",
            caption="../report/regression.rst",
            category="Regressions",
            labels={"table": "regression"},
        ),
        layer_correlations="results/{model}/{dataset}/regression_layer_correlations.csv",
        concentrated="results/{model}/{dataset}/regression_concentrated.csv",
        windows="results/{model}/{dataset}/regression_windows.csv",
        features="results/{model}/{dataset}/regression_features.csv",
    log:
        "logs/fit_regressions/{model}/{dataset}.log",
    benchmark:
        "benchmarks/fit_regressions/{model}/{dataset}.tsv"
    conda:
        "../../envs/locedit.yaml"
    resources:
        mem_mb=2000,
    params:
        window=config["analysis"]["window"],
        metrics=regression_metrics(),
        robustness_metrics=config["analysis"]["robustness_metrics"],
        min_rows=config["analysis"]["min_rows"],
        bootstrap_replicates=config["analysis"]["bootstrap_replicates"],
        permutations=config["analysis"]["permutations"],
        confidence=config["analysis"]["confidence"],
        cv_folds=config["analysis"]["cv_folds"],
        cv_repeats=config["analysis"]["cv_repeats"],
        wild_bootstrap_reps=config["analysis"]["wild_bootstrap_reps"],
        seed=analysis_seed(),
        code=code_hash("workflow/scripts/fit_regressions.py"),
    script:
        "../scripts/fit_regressions.py"


rule write_tables:
    input:
        main="results/{model}/{dataset}/regression.csv",
        layer_correlations="results/{model}/{dataset}/regression_layer_correlations.csv",
        concentrated="results/{model}/{dataset}/regression_concentrated.csv",
        windows="results/{model}/{dataset}/regression_windows.csv",
        features="results/{model}/{dataset}/regression_features.csv",
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
        tracing="results/{model}/{dataset}/tracing.parquet",
    output:
        **{
            f"{name}_{ext}": f"results/{{model}}/{{dataset}}/analysis/tables/{name}.{ext}"
            for name in ANALYSIS_TABLES
            for ext in ("md", "tex")
        },
        **{
            f"{name}_html": report(
                f"results/{{model}}/{{dataset}}/analysis/tables/{name}.html",
                caption="../report/tables.rst",
                # The summary opens with the verdict: its own category, linked from the front page.
                category="Summary" if name == SUMMARY_TABLE else "Tables",
                labels={"table": name},
            )
            for name in ANALYSIS_TABLES
        },
    log:
        "logs/write_tables/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        alpha=config["analysis"]["alpha"],
        default_layer=config["analysis"]["default_layer"],
        meta={
            "model_name": config["model"]["name"],
            "model_source": config["model"]["source"],
            "dataset_name": config["dataset"]["name"],
            "dataset_format": config["dataset"]["format"],
            "trace_kind": config["analysis"]["trace_kind"],
            "trace_window": config["analysis"]["window"],
        },
        code=code_hash("workflow/scripts/write_tables.py"),
    script:
        "../scripts/write_tables.py"


rule plot_edit_scores:
    input:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
    output:
        **figure_outputs("plot_edit_scores"),
    log:
        "logs/plot_edit_scores/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        code=code_hash("workflow/scripts/plot_edit_scores.py"),
    script:
        "../scripts/plot_edit_scores.py"


rule plot_r2_bars:
    input:
        main="results/{model}/{dataset}/regression.csv",
        windows="results/{model}/{dataset}/regression_windows.csv",
    output:
        **figure_outputs("plot_r2_bars"),
    log:
        "logs/plot_r2_bars/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        code=code_hash("workflow/scripts/plot_r2_bars.py"),
    script:
        "../scripts/plot_r2_bars.py"


rule plot_trace_scatter:
    input:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
        layer_correlations="results/{model}/{dataset}/regression_layer_correlations.csv",
    output:
        **figure_outputs("plot_trace_scatter"),
    log:
        "logs/plot_trace_scatter/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        default_layer=config["analysis"]["default_layer"],
        code=code_hash("workflow/scripts/plot_trace_scatter.py"),
    script:
        "../scripts/plot_trace_scatter.py"


rule plot_tracing_windows:
    input:
        tracing="results/{model}/{dataset}/tracing.parquet",
        facts="results/{model}/{dataset}/facts.parquet",
    output:
        **figure_outputs("plot_tracing_windows"),
    log:
        "logs/plot_tracing_windows/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        kind=config["analysis"]["trace_kind"],
        code=code_hash("workflow/scripts/plot_tracing_windows.py"),
    script:
        "../scripts/plot_tracing_windows.py"


rule write_probe_tables:
    input:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
        main="results/{model}/{dataset}/regression.csv",
    output:
        md=f"results/{{model}}/{{dataset}}/analysis/tables/{PROBE_TABLE}.md",
        tex=f"results/{{model}}/{{dataset}}/analysis/tables/{PROBE_TABLE}.tex",
        html=report(
            f"results/{{model}}/{{dataset}}/analysis/tables/{PROBE_TABLE}.html",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": PROBE_TABLE},
        ),
    log:
        "logs/write_probe_tables/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        code=code_hash("workflow/scripts/write_probe_tables.py"),
    script:
        "../scripts/write_probe_tables.py"


rule plot_probes:
    input:
        table="results/{model}/{dataset}/edit_vs_trace.parquet",
    output:
        **figure_outputs("plot_probes"),
    log:
        "logs/plot_probes/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        code=code_hash("workflow/scripts/plot_probes.py"),
    script:
        "../scripts/plot_probes.py"


# The last rule: what the study ran on, after every result (its config hash reruns it, alone, on
# any config change). It checks that the model's files are still those validation recorded.
rule record_provenance:
    input:
        report="results/{model}/{dataset}/validation.json",
        results=study_outputs(),
    output:
        provenance=report(
            "results/{model}/{dataset}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"record": "provenance"},
        ),
    log:
        "logs/record_provenance/{model}/{dataset}.log",
    localrule: True
    conda:
        "../../envs/locedit.yaml"
    params:
        study=provenance_params(),
        model_dir=lambda wildcards: model_dir(),
        code=code_hash("workflow/scripts/record_provenance.py"),
    script:
        "../scripts/record_provenance.py"
