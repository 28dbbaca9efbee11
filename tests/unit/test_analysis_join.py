"""The per-edit analysis table: join keys, filters and the concentrated-subset heuristic."""

import numpy as np
import pandas as pd
import pytest

from locedit.analysis.join import (
    build_edit_vs_trace,
    concentrated_cases,
    known_tracing,
    trace_curves,
)
from tests.analysis_synth import make_tables


@pytest.fixture(scope="module")
def tables():
    return make_tables(
        n_cases=12,
        n_model_layers=6,
        edit_layers=(0, 2, 5),
        windows=(1, 5),
        variants=("error_injection", "fact_erasure"),
        methods=("rome", "ft-5"),
    )


def test_trace_effect_is_the_window5_mlp_value_at_the_edit_layer(tables):
    facts, tracing, edits = tables
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    mlp5 = tracing[(tracing.kind == "mlp") & (tracing.window == 5)].set_index(["case_id", "layer"])
    mlp1 = tracing[(tracing.kind == "mlp") & (tracing.window == 1)].set_index(["case_id", "layer"])
    zero = tracing[tracing.kind == "zero"].set_index(["case_id", "layer"])
    for r in df.sample(20, random_state=0).itertuples():
        key = (r.case_id, r.layer)
        assert r.trace_effect == mlp5.loc[key, "effect_frac_max"]
        assert r.trace_effect_last == mlp5.loc[key, "effect_frac_last"]
        assert r.trace_effect_abs_last == mlp5.loc[key, "effect_abs_last"]
        assert r.trace_effect_w1 == mlp1.loc[key, "effect_frac_max"]
        assert r.zero_effect == zero.loc[key, "effect_frac_max"]
    assert np.allclose(
        df["overall_essence_score"],
        df[["rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score"]].mean(
            axis=1
        ),
    )


def test_only_known_facts_and_eligible_erasures_are_kept(tables):
    facts, tracing, edits = tables
    facts = facts.copy()
    facts.loc[facts.case_id == 5, "erasure_eligible"] = False
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    unknown = set(facts.loc[~facts.is_correct, "case_id"])
    assert unknown and not unknown & set(df.case_id)
    assert 5 not in set(df.loc[df.variant == "fact_erasure", "case_id"])
    assert 5 in set(df.loc[df.variant == "error_injection", "case_id"])
    kept = build_edit_vs_trace(edits, tracing, facts, window=5, erasure_eligible_only=False)
    assert 5 in set(kept.loc[kept.variant == "fact_erasure", "case_id"])
    assert len(df) == len(kept) - 3 * 2  # 3 layers x 2 methods of case 5's erasures


def test_untraced_window_names_the_config_key(tables):
    facts, tracing, edits = tables
    with pytest.raises(ValueError, match="analysis.window=10"):
        build_edit_vs_trace(edits, tracing, facts, window=10)


def test_failed_tracing_rows_leave_nan_not_a_crash(tables):
    facts, tracing, edits = tables
    tracing = tracing.copy()
    bad = (tracing.case_id == 4) & (tracing.kind == "mlp")
    tracing.loc[bad, "status"] = "no_subject_tokens"
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    assert df.loc[df.case_id == 4, "trace_effect"].isna().all()
    assert df.loc[df.case_id != 4, "trace_effect"].notna().all()
    assert not df.loc[df.case_id == 4, "concentrated"].any()


def test_duplicate_edits_are_rejected(tables):
    facts, tracing, edits = tables
    with pytest.raises(ValueError, match="duplicate edits"):
        build_edit_vs_trace(pd.concat([edits, edits.head(1)]), tracing, facts, window=5)


def test_concentrated_heuristic_counts_layers_near_the_peak():
    curves = {
        "sharp": [0.0, 0.1, 1.0, 0.6, 0.1, 0.0, 0.0, 0.0],  # 1 other layer >= .5 -> concentrated
        "three": [0.5, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0],  # exactly 3 others -> concentrated
        "broad": [0.5, 0.5, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0],  # 4 others -> not
        "flat0": [0.0] * 8,  # no positive peak -> not
    }
    rows = [(c, layer, v) for c, vals in curves.items() for layer, v in enumerate(vals)]
    df = pd.DataFrame(rows, columns=["case_id", "layer", "effect_frac_max"]).set_index(
        ["case_id", "layer"]
    )
    out = concentrated_cases(df, 0.5, 3).set_index("case_id")
    assert out["concentrated"].to_dict() == {
        "broad": False,
        "flat0": False,
        "sharp": True,
        "three": True,
    }
    assert out.loc["sharp", "peak_layer"] == 2
    assert concentrated_cases(df, 0.5, 0).set_index("case_id")["concentrated"].sum() == 0


def test_trace_curves_and_known_tracing_filter(tables):
    facts, tracing, _ = tables
    with pytest.raises(ValueError, match="windows"):
        trace_curves(tracing, "mlp", None)
    kt = known_tracing(tracing, facts)
    assert set(kt.kind) == {"mlp"} and kt.case_id.isin(facts.case_id[facts.is_correct]).all()


def test_a_run_whose_tracing_all_failed_still_yields_tables(tables):
    from locedit.analysis.robust import RobustSettings
    from locedit.analysis.study import run_study

    facts, tracing, edits = tables
    tracing = tracing.assign(status="no_noise_effect")
    df = build_edit_vs_trace(edits, tracing, facts, window=5)
    assert df["trace_effect"].isna().all() and not df["concentrated"].any()
    frames = run_study(df, 5, ["rewrite"], ["rewrite"], 10, RobustSettings(replicates=5, permutations=5))
    assert set(frames["main"]["status"]) == {"too_few_rows"}
    assert frames["concentrated"].empty
