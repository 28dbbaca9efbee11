"""The probe analysis rules (not in the default DAG: editing.probes is off there) run through
Snakemake from synthetic upstream tables shaped like the real ones (no model is loaded); the
default DAG's analysis rules run on real tables in test_end_to_end.py."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tests.analysis_synth import make_tables
from tests.workflow.helpers import REPO, snakemake, write_config


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


def test_every_figure_has_a_caption():
    from locedit.registry.analysis import FIGURES

    assert len(FIGURES) >= 16
    for stem, fig in FIGURES.items():
        assert (REPO / "workflow/report" / fig.caption).read_text().strip(), stem


@pytest.mark.slow
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
