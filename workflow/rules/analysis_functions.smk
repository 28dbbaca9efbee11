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
        )
        out[f"{stem}_pdf"] = f"results/{{model}}/{{dataset}}/figures/{stem}.pdf"
    return out


def analysis_targets():
    figures = [f"{RESULTS}/figures/{stem}.{ext}" for stem in FIGURES for ext in ("png", "pdf")]
    tables = [
        f"{RESULTS}/analysis/tables/{name}.{ext}"
        for name in ANALYSIS_TABLES
        for ext in ("md", "tex")
    ]
    return [f"{RESULTS}/regression.csv"] + tables + figures
