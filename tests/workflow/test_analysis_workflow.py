"""Every analysis rule (join, regressions, tables, figures) runs through Snakemake on the reduced
default config, from synthetic upstream tables shaped like the real ones (no model is loaded)."""

from __future__ import annotations


import pandas as pd
import yaml

from tests.analysis_synth import make_tables
from tests.workflow.helpers import REPO, snakemake, write_config

ANALYSIS_RULES = [
    "join_edits_tracing", "fit_regressions", "write_tables", "plot_edit_scores", "plot_r2_bars",
    "plot_trace_scatter", "plot_tracing_windows",
]  # fmt: skip


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _config() -> dict:
    """The reduced test config (.test/config.yaml) over the defaults of config.yaml."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    test_cfg = REPO / ".test" / "config.yaml"
    return _merge(cfg, yaml.safe_load(test_cfg.read_text())) if test_cfg.exists() else cfg


def _write_upstream(tmp_path, cfg, facts, tracing, edits):
    """The analysis rules' inputs under the config's results directory: ``(results, its path)``."""
    results = f"results/{cfg['model']['name']}/{cfg['dataset']['name']}"
    out = tmp_path / results
    out.mkdir(parents=True)
    facts.to_parquet(out / "facts.parquet")
    tracing.to_parquet(out / "tracing.parquet")
    edits.to_parquet(out / "edits.parquet")
    return results, out


def _targets(results: str) -> list[str]:
    from locedit.analysis.tables import TABLE_NAMES as tables
    from locedit.registry.analysis import FIGURES as figs

    return (
        [f"{results}/regression.csv"]
        + [f"{results}/analysis/tables/{t}.{e}" for t in tables for e in ("md", "tex", "html")]
        + [f"{results}/figures/{f}.{e}" for f, fig in figs.items() if not fig.probes for e in ("png", "pdf")]
    )


def test_analysis_rules_run_on_the_reduced_config(tmp_path):
    cfg = _config()
    cfg["analysis"]["bootstrap_replicates"] = 20  # the rules, not the statistics, are under test
    cfg["analysis"]["permutations"] = 20
    layers = cfg["editing"]["layers"]
    windows = sorted({r["window"] for r in cfg["tracing"]["runs"] if r["kind"] == "mlp"})
    assert cfg["analysis"]["window"] in windows
    facts, tracing, edits = make_tables(
        n_cases=15,
        n_model_layers=max(layers) + 2,
        edit_layers=tuple(layers),
        windows=tuple(windows),
        variants=tuple(cfg["editing"]["variants"]),
        methods=tuple(cfg["editing"]["run_methods"]),
        seed=2,
    )
    results, out = _write_upstream(tmp_path, cfg, facts, tracing, edits)
    configfile = write_config(tmp_path, cfg)
    targets = _targets(results)
    assert len(targets) > 40
    snakemake(
        tmp_path,
        "--cores",
        "2",
        "--allowed-rules",
        *ANALYSIS_RULES,
        "--",
        *targets,
        configfile=configfile,
    )
    for t in targets:
        path = tmp_path / t
        assert path.exists() and path.stat().st_size > 0, t
        if t.endswith(".png"):
            assert path.read_bytes()[:4] == b"\x89PNG"
    reg = pd.read_csv(out / "regression.csv")
    for col in [
        "variant",
        "method",
        "metric",
        "n",
        "r2_layer",
        "r2_trace",
        "r2_both",
        "r2_diff",
        "f_pvalue",
        "rmse_layer",
        "mae_trace",
        "wald_pvalue_cluster",
        "wald_pvalue_cr3",
        "wald_status",
        "cv_r2_diff",
        "perm_pvalue",
        "status",
    ]:
        assert col in reg.columns, col
    assert len(reg) == len(cfg["editing"]["variants"]) * len(cfg["editing"]["run_methods"]) * len(
        cfg["analysis"]["metrics"]
    )
    joined = pd.read_parquet(out / "edit_vs_trace.parquet")
    assert joined["case_id"].isin(facts.loc[facts.is_correct, "case_id"]).all()
    # Nothing left to do: outputs are complete and their params/code hashes recorded.
    dry = snakemake(
        tmp_path, "-n", "--allowed-rules", *ANALYSIS_RULES, "--", *targets, configfile=configfile
    )
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # The report holds every table (rendered HTML, captioned), not only the figures.
    report = tmp_path / "report.html"
    snakemake(tmp_path, "--report", str(report), "--allowed-rules", *ANALYSIS_RULES, "--",
              *targets, configfile=configfile)
    html = report.read_text(errors="replace")
    tables = sorted({t.rsplit("/", 1)[1].split(".")[0] for t in targets if "/tables/" in t})
    assert tables and not [t for t in tables if f"{t}.html" not in html], tables


def test_every_figure_has_a_caption():
    from locedit.registry.analysis import FIGURES

    assert len(FIGURES) >= 16
    for stem, fig in FIGURES.items():
        assert (REPO / "workflow/report" / fig.caption).read_text().strip(), stem


def test_probe_rules_run_with_probes_on(tmp_path):
    """With editing.probes on, the probe table and figure are made and every probe is regressed."""
    import numpy as np

    from locedit.editing.probes import PROBE_METRICS

    cfg = _config()
    cfg["analysis"].update(bootstrap_replicates=10, permutations=10, wild_bootstrap_reps=9)
    cfg["editing"]["probes"]["enabled"] = True
    layers = cfg["editing"]["layers"]
    windows = sorted({r["window"] for r in cfg["tracing"]["runs"] if r["kind"] == "mlp"})
    facts, tracing, edits = make_tables(
        n_cases=15, n_model_layers=max(layers) + 2, edit_layers=tuple(layers), windows=tuple(windows),
        variants=tuple(cfg["editing"]["variants"]), methods=tuple(cfg["editing"]["run_methods"]), seed=2,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for col in PROBE_METRICS.values():  # probes scored for some edits only, as in a real run
        edits[col] = np.where(rng.random(len(edits)) < 0.7, rng.random(len(edits)), np.nan)
    results, out = _write_upstream(tmp_path, cfg, facts, tracing, edits)
    targets = [f"{results}/analysis/tables/generalisation_probes.{e}" for e in ("md", "tex", "html")]
    targets += [f"{results}/figures/generalisation_probes.{e}" for e in ("png", "pdf")]
    rules = ["join_edits_tracing", "fit_regressions", "write_probe_tables", "plot_probes"]
    snakemake(tmp_path, "--cores", "2", "--allowed-rules", *rules, "--", *targets,
              configfile=write_config(tmp_path, cfg))  # fmt: skip
    assert (tmp_path / targets[3]).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / targets[0]).read_text()
    assert "| Alias" in md and "Over-reach, generic Diff" in md
    reg = pd.read_csv(out / "regression.csv")
    assert set(PROBE_METRICS) <= set(reg["metric"])
