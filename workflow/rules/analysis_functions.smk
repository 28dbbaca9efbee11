# Functions of analysis.smk (input/param functions, targets); kept apart from the rules
# so that `snakemake --lint` is clean (no rules and functions in one file).


def analysis_seed():
    seed = config["analysis"]["seed"]
    return config["seed"] if seed is None else seed


def figure_outputs(rule_name):
    """Named PNG (in the report, with its caption) and PDF outputs of one plotting rule."""
    out = {}
    for stem, fig in figures_of(rule_name).items():
        out[f"{stem}_png"] = report(
            f"results/{{model}}/{{dataset}}/figures/{stem}.png",
            caption=f"../report/{fig.caption}",
            category=fig.category,
            # listed by name in the report's sidebar, not by a path cut at its edge
            labels={"figure": stem},
        )
        out[f"{stem}_pdf"] = f"results/{{model}}/{{dataset}}/figures/{stem}.pdf"
    return out


def probes_enabled():
    return bool(config["editing"]["probes"]["enabled"])


def regression_metrics():
    """analysis.metrics, plus every probe (as an outcome) when editing.probes is on."""
    from locedit.editing.probes import PROBE_METRICS

    metrics = list(config["analysis"]["metrics"])
    extra = [m for m in PROBE_METRICS if m not in metrics] if probes_enabled() else []
    return metrics + extra


def analysis_targets():
    figures = [
        f"{RESULTS}/figures/{stem}.{ext}"
        for stem, fig in FIGURES.items()
        if probes_enabled() or not fig.probes
        for ext in ("png", "pdf")
    ]
    names = ANALYSIS_TABLES + ([PROBE_TABLE] if probes_enabled() else [])
    tables = [f"{RESULTS}/analysis/tables/{name}.{ext}" for name in names for ext in ("md", "tex")]
    return [f"{RESULTS}/regression.csv"] + tables + figures


def study_outputs():
    """Every result of the study but its provenance record."""
    return (
        data_targets()
        + tracing_targets()
        + editing_targets()
        + tuning_targets()
        + analysis_targets()
    )


def provenance_targets():
    return [f"{RESULTS}/provenance.json"]


def provenance_params():
    """The study's record as planned: names, what they stand for, the shared artefacts it read,
    and the config (canonical; its hash identifies the run's settings)."""
    return {
        "study": {"model": MODEL, "dataset": DATASET},
        "identity": STUDY_IDENTITY,
        "artefacts": {
            "model": model_source(),
            "world": (
                WORLD_DIR
                if config["model"]["source"] == "toy" or config["dataset"]["source"] == "synthetic"
                else None
            ),
            "stats": layer_stats_dir() if uses_stats() else None,
        },
        "config_sha256": provenance.digest(config, 64),
        "config": config,
    }
