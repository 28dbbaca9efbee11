"""The whole default DAG through Snakemake, end to end, on the study of the suite
(``tests.workflow.runs.study_config``: config.yaml on its first 12 records at two edit layers):
every rule runs, and every table holds what its upstream tables say it must.

One run per session (``study_run``), shared with the science, one-fact, report, resume,
bad-input, GPU-cap and tuning tests.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from locedit.analysis.tables import TABLE_NAMES
from locedit.data.records import validate_records
from locedit.modeling import load_model
from locedit.registry.analysis import FIGURES
from locedit.scoring import contains_target
from tests.workflow.runs import (
    STUDY_RUN_TESTS, RESULTS, dry_run_listing, run, study_config, study_run, toy_dir, world_dir,
)

pytestmark = STUDY_RUN_TESTS

PAPER_METRICS = ["rewrite_score", "paraphrase_score", "neighborhood_score", "overall_score", "essence_score"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return study_run(tmp_path_factory)


@pytest.fixture(scope="module")
def cfg():
    return study_config()


def _read(study, name):
    return pd.read_parquet(study / RESULTS / name)


def test_every_rule_of_the_default_dag_ran(study, tmp_path):
    """The rules the run started are exactly the rules of the default DAG (planned from scratch
    with the same config), and a finished run plans nothing."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((study / "config.yaml").read_text())
    planned = {j["rule"] for j in dry_run_listing(fresh, configfile=fresh / "config.yaml")}
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", (study / "run.log").read_text(), re.MULTILINE))
    assert ran == planned, (sorted(planned - ran), sorted(ran - planned))
    must = {"train_toy_model", "filter_known_facts", "trace_facts", "compute_layer_stats",
            "prepare_edit_inputs", "edit_facts", "edit_facts_exporting_vectors", "collect_edits",
            "join_edits_tracing", "fit_regressions", "write_tables"}  # fmt: skip
    assert must <= ran
    assert dry_run_listing(study, configfile=study / "config.yaml") == []


def test_world_records_and_facts(study, cfg):
    model, tok = load_model(str(toy_dir(study)), device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.n_layer == cfg["toy_model"]["n_layer"]
    world = json.loads((world_dir(study) / "records.json").read_text())
    validate_records(world, tok)  # every subject locatable with the trained tokenizer
    records = json.loads((study / RESULTS / "records.json").read_text())
    assert records == world[: cfg["dataset"]["limit"]]
    facts = _read(study, "facts.parquet")
    assert list(facts["case_id"]) == [r["case_id"] for r in records]
    assert facts["p_true"].between(0, 1).all()
    assert (facts["erasure_eligible"] == (facts["p_true"] >= cfg["filter"]["erasure_min_prob"])).all()
    # Correctness is the paper's criterion on the stored greedy continuation.
    assert list(facts["is_correct"]) == [contains_target(c, t) for c, t in zip(facts["continuation"], facts["target_true"])]


def test_tracing_tables(study, cfg):
    facts = _read(study, "facts.parquet")
    known = set(facts.loc[facts["is_correct"], "case_id"])
    tracing = _read(study, "tracing.parquet")
    runs = {(r["kind"], r["window"]) for r in cfg["tracing"]["runs"]}
    assert set(zip(tracing["kind"], tracing["window"])) == runs
    assert set(tracing["case_id"]) == known  # tracing.only_correct
    n_layers = cfg["toy_model"]["n_layer"]
    per_fact = tracing.groupby(["case_id", "kind", "window"])["layer"].agg(["min", "max", "nunique"])
    assert (per_fact["min"] == 0).all() and (per_fact["max"] == n_layers - 1).all()
    assert (per_fact["nunique"] == n_layers).all()
    ok = tracing[tracing["status"] == "ok"]
    assert len(ok) >= 0.8 * len(tracing), tracing["status"].value_counts()
    effects = ["effect_frac_max", "effect_frac_last", "effect_abs_max", "effect_abs_last"]
    assert np.isfinite(ok[effects]).all().all()
    # Noising the subject lowers p(o_true) for most facts, and restoring the MLPs around the
    # best layer brings a positive share of it back (the paper's main window).
    per_fact = ok.groupby("case_id")[["p_clean", "p_noised"]].first()
    assert (per_fact["p_clean"] > per_fact["p_noised"]).mean() >= 0.8
    main = ok[(ok["kind"] == "mlp") & (ok["window"] == cfg["tracing"]["peak_run"]["window"])]
    assert (main.groupby("case_id")["effect_frac_max"].max() > 0).mean() >= 0.8


def test_edit_table_covers_every_problem_method_layer_and_eligible_fact(study, cfg):
    ed = cfg["editing"]
    facts = _read(study, "facts.parquet")
    known = set(facts.loc[facts["is_correct"], "case_id"])
    eligible = known & set(facts.loc[facts["erasure_eligible"], "case_id"])
    edits = _read(study, "edits.parquet")
    assert set(edits["variant"]) == set(ed["variants"])
    assert set(edits["method"]) == set(ed["run_methods"]) and set(edits["layer"]) == set(ed["layers"])
    cells = edits.groupby(["variant", "method", "layer"])["case_id"].apply(frozenset)
    assert len(cells) == len(ed["variants"]) * len(ed["run_methods"]) * len(ed["layers"])
    for variant in ed["variants"]:
        ids = set(cells[variant].iloc[0])
        assert all(set(c) == ids for c in cells[variant]), f"{variant}: cells edit different facts"
        if variant == "fact_erasure":
            assert ids == eligible
        elif variant == "tracing_reversal":  # facts whose o_noise is not the true object
            o_noise = _read(study, "tracing/o_noise.parquet")
            assert ids == known - set(o_noise.loc[o_noise["o_noise_equals_true"], "case_id"])
        else:
            assert ids == known
    assert not edits.duplicated(["case_id", "variant", "method", "layer"]).any()
    assert edits[PAPER_METRICS].notna().all().all() and edits[PAPER_METRICS].stack().between(0, 1).all()
    # Every edit was undone: the pre-edit values of one fact are the same in every cell.
    pre = edits.groupby(["variant", "case_id"])["rewrite_pre"].nunique()
    assert (pre == 1).all()
    # MEMIT and FT-5 edit their window, ROME and FT-1 the central layer.
    for method, width in (("rome", 1), ("ft-1", 1), ("memit", 3), ("ft-5", 3)):
        layers = edits.loc[(edits["method"] == method) & (edits["layer"] == 0), "edited_layers"]
        assert (layers.str.split(",").str.len() == width).all(), (method, layers.unique())


def test_join_regressions_and_tables(study, cfg):
    edits = _read(study, "edits.parquet")
    joined = _read(study, "edit_vs_trace.parquet")
    known = set(_read(study, "facts.parquet").query("is_correct")["case_id"])
    assert set(joined["case_id"]) <= known and len(joined) > 0
    # One joined row per analysed edit, with the tracing effect at the edit layer.
    analysed = edits[edits["case_id"].isin(joined["case_id"])]
    assert len(joined) == len(analysed.merge(joined[["case_id", "variant", "method", "layer"]]))
    assert joined["trace_effect"].notna().mean() >= 0.9
    reg = pd.read_csv(study / RESULTS / "regression.csv")
    ed, an = cfg["editing"], cfg["analysis"]
    assert len(reg) == len(ed["variants"]) * len(ed["run_methods"]) * len(an["metrics"])
    for col in ("n", "r2_layer", "r2_trace", "r2_both", "r2_diff", "f_pvalue", "wald_pvalue_cluster",
                "wald_pvalue_cr3", "cv_r2_diff", "perm_pvalue"):
        assert col in reg.columns, col
    ok = reg[reg["status"] == "ok"]
    assert len(ok) >= 0.8 * len(reg), reg["status"].value_counts()
    for col in ("r2_layer", "r2_both"):  # up to float rounding: a binary outcome the layer
        assert ok[col].between(-1e-12, 1 + 1e-12).all(), col  # cannot explain gives -2.2e-16
    # Adding Layer x Trace never lowers the in-sample fit of nested OLS models.
    assert (ok["r2_both"] >= ok["r2_layer"] - 1e-9).all()
    assert np.allclose(ok["r2_diff"], ok["r2_both"] - ok["r2_layer"], atol=1e-9)
    tables = study / RESULTS / "analysis/tables"
    for name in TABLE_NAMES:
        for ext in ("md", "tex"):
            text = (tables / f"{name}.{ext}").read_text()
            assert text.strip(), f"{name}.{ext} is empty"
    summary = (tables / "summary.md").read_text()
    assert re.search(rf"\| known facts analysed +\| {len(known)} ", summary), summary
    assert re.search(rf"\| edits analysed +\| {len(joined)} ", summary), summary
    for stem, fig in FIGURES.items():
        if not fig.probes:
            png = study / RESULTS / "figures" / f"{stem}.png"
            assert png.read_bytes()[:4] == b"\x89PNG", stem
            assert (study / RESULTS / "figures" / f"{stem}.pdf").stat().st_size > 0


def test_validation_report_and_logs(study):
    report = json.loads((study / RESULTS / "validation.json").read_text())
    assert report, "empty validation report"
    logs = list((study / "logs").rglob("*.log"))
    assert logs and not [p for p in logs if "Traceback" in p.read_text(errors="replace")]


def test_report_of_the_run_holds_every_figure_and_table(study, tmp_path):
    out = tmp_path / "report.html"
    run(study, "--nolock", "--report", str(out))
    html = out.read_text(errors="replace")
    figures = sorted(p.name for p in (study / RESULTS).rglob("figures/*.png"))
    assert figures and not [name for name in figures if name not in html]
    assert not [t for t in TABLE_NAMES if f"{t}.html" not in html]
    # the landing page opens with the run's verdict
    assert "The answer of this run" in html and "Does localization inform editing on toy?" in html


def test_summary_opens_with_the_verdict(study):
    """The summary's first paragraph answers the question from this run's numbers."""
    md = (study / RESULTS / "analysis" / "tables" / "summary.md").read_text()
    head, _, table = md.partition("\n| ")
    assert head.startswith("### Summary of this run\n\nDoes localization inform editing on toy? ")
    assert re.search(r"Across \d+ conditions", head) and "held-out facts" in head
    assert "known facts analysed" in table
