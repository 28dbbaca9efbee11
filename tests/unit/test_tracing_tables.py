"""Per-layer tracing effects from grids: definitions, statuses, and tracing a small dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from locedit.tracing.trace import TraceResult, ZeroResult
from locedit.tracing.tables import (
    EFFECT_COLUMNS,
    facts_frame,
    grid_frame,
    layer_effects,
    peak_layers,
    trace_dataset,
    zero_frame,
)

RUNS = [{"kind": "mlp", "window": 3}, {"kind": "zero", "window": 3}]


def _fixture():
    # 3 prompt tokens (subject = token 1), 2 layers; p_clean 0.5, p_noised 0.1
    restored = np.array([[0.1, 0.1], [0.3, 0.6], [0.2, 0.05]])
    res = TraceResult("mlp", 3, 0.5, 0.1, restored, (1, 2), ["a", "b", "c"], 0.2, 10, 0)
    zero = ZeroResult(3, 0.5, np.array([0.25, 0.6]), (1, 2))
    grid = pd.concat([grid_frame(7, res), zero_frame(7, zero)], ignore_index=True)
    facts = facts_frame(
        [
            {
                "case_id": 7,
                "status": "ok",
                "p_clean": 0.5,
                "p_noised": 0.1,
                "noise_std": 0.2,
                "n_layers": 2,
                "subject_start": 1,
                "subject_end": 2,
                "n_prompt_tokens": 3,
                "target": "x",
                "o_noise": "y",
                "o_noise_equals_true": False,
            },
            {
                "case_id": 9,
                "status": "subject_not_found",
                "noise_std": 0.2,
                "n_layers": 2,
                "target": "x",
            },
        ]
    )
    return grid, facts


def _row(eff, case_id, kind, layer):
    sel = eff[(eff.case_id == case_id) & (eff.kind == kind) & (eff.layer == layer)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_paper_definition():
    grid, facts = _fixture()
    eff = layer_effects(grid, facts, RUNS, definition="paper")
    assert list(eff.columns) == EFFECT_COLUMNS
    assert len(eff) == 2 * 2 * 2  # facts x runs x layers, failed facts included
    r0, r1 = _row(eff, 7, "mlp", 0), _row(eff, 7, "mlp", 1)
    assert r0.effect_frac_max == pytest.approx((0.3 - 0.1) / 0.4)
    assert r0.effect_frac_last == pytest.approx((0.3 - 0.1) / 0.4)
    assert r1.effect_frac_max == pytest.approx((0.6 - 0.1) / 0.4)  # > 1: not clipped
    assert r1.effect_abs_max == pytest.approx(0.5)
    # token 2 restores below p_noised at layer 1: it is not the max, but abs can be negative
    assert r1.effect_abs_last == pytest.approx(0.5)
    assert r0.status == "ok" and r0.noise_std == 0.2


def test_authors_code_definition_clips_and_uses_high_score():
    grid, facts = _fixture()
    eff = layer_effects(grid, facts, RUNS, definition="authors_code")
    high = 0.6  # max(p_clean 0.5, max restored 0.6)
    assert _row(eff, 7, "mlp", 1).effect_frac_max == pytest.approx(0.5 / (high - 0.1))
    assert _row(eff, 7, "mlp", 0).effect_frac_max == pytest.approx(0.2 / (high - 0.1))
    z = _row(eff, 7, "zero", 1)  # zeroing raised p: clipped at 0
    assert z.effect_frac_max == 0 and z.effect_abs_max == pytest.approx(0.5 - 0.6)


def test_zero_effect_is_fraction_removed():
    grid, facts = _fixture()
    eff = layer_effects(grid, facts, RUNS)
    z = _row(eff, 7, "zero", 0)
    assert z.effect_frac_max == pytest.approx(0.5) and z.effect_frac_last == pytest.approx(0.5)
    assert z.effect_abs_max == pytest.approx(0.25) and z.effect_abs_last == pytest.approx(0.25)
    assert _row(eff, 7, "zero", 1).effect_frac_max == pytest.approx(-0.2)  # paper: unclipped


def test_failed_and_flat_facts_keep_rows_with_reason():
    grid, facts = _fixture()
    eff = layer_effects(grid, facts, RUNS)
    failed = eff[eff.case_id == 9]
    assert len(failed) == 4 and set(failed.status) == {"subject_not_found"}
    assert failed[["effect_frac_max", "effect_abs_last"]].isna().all().all()
    grid.loc[grid.kind == "mlp", "score_corrupt"] = 0.5  # the run's noise has no effect
    eff = layer_effects(grid, facts, RUNS)
    assert set(eff[(eff.case_id == 7) & (eff.kind == "mlp")].status) == {"no_noise_effect"}
    assert eff[(eff.case_id == 7) & (eff.kind == "mlp")].effect_frac_max.isna().all()
    assert set(eff[(eff.case_id == 7) & (eff.kind == "zero")].status) == {"ok"}


def test_noising_and_other_metrics_are_normalised_by_their_own_run():
    """Noising measures the share of the corruption's effect that corrupting one site brings
    about, (m - r) / (m - m*); every kind is normalised by its own run's clean and corrupted
    values, in its own metric, and a fact without an STR partner says so."""
    grid, facts = _fixture()
    # noising, log-probabilities: clean -0.5, corrupted -2.5; patched runs fall in between
    noised = TraceResult("mlp_noising_logprob", 3, -0.5, -2.5,
                         np.array([[-0.5, -0.5], [-1.0, -2.0], [-0.5, -0.7]]), (1, 2), ["a", "b", "c"], 0.2, 10, 0)
    grid = pd.concat([grid, grid_frame(7, noised)], ignore_index=True)
    runs = RUNS + [{"kind": "mlp_noising_logprob", "window": 3}, {"kind": "mlp_str", "window": 3}]
    eff = layer_effects(grid, facts, runs)
    r0, r1 = _row(eff, 7, "mlp_noising_logprob", 0), _row(eff, 7, "mlp_noising_logprob", 1)
    assert r0.effect_abs_max == pytest.approx(0.5) and r0.effect_frac_max == pytest.approx(0.5 / 2.0)
    assert r1.effect_abs_max == pytest.approx(1.5) and r1.effect_frac_last == pytest.approx(1.5 / 2.0)
    assert (r0.p_clean, r0.p_noised) == (-0.5, -2.5)  # the run's own endpoints
    assert _row(eff, 7, "mlp", 0).p_noised == pytest.approx(0.1)  # the paper's run keeps its own
    assert set(eff[(eff.case_id == 7) & (eff.kind == "mlp_str")].status) == {"no_partner"}
    authors = layer_effects(grid, facts, runs, definition="authors_code")
    # noising divides by |m - min(m*, min r)| = |-0.5 - (-2.5)|
    assert _row(authors, 7, "mlp_noising_logprob", 1).effect_frac_max == pytest.approx(1.5 / 2.0)


def test_bad_definition_names_the_key():
    grid, facts = _fixture()
    with pytest.raises(ValueError, match="tracing.effect_definition"):
        layer_effects(grid, facts, RUNS, definition="median")


def test_peak_layers():
    grid, facts = _fixture()
    peaks = peak_layers(layer_effects(grid, facts, RUNS), "mlp", 3)
    assert peaks.to_dict("records") == [{"case_id": 7, "layer": 1, "effect_frac_max": 1.25}]


def test_trace_dataset(tiny_gpt2, tiny_tokenizer, counterfact_records):
    from locedit.data.records import flat_fact

    facts = [flat_fact(r) for r in counterfact_records[:2]]
    facts.append({**facts[0], "case_id": 99, "subject": ""})  # cannot be located
    runs = [
        {"kind": "mlp", "window": 3},
        {"kind": "attn", "window": 1},
        {"kind": "zero", "window": 3},
    ]
    grid, table = trace_dataset(
        tiny_gpt2,
        tiny_tokenizer,
        facts,
        runs,
        noise_std=0.3,
        samples=2,
        seed=0,
        row_budget=64,
        o_noise_max_tokens=4,
    )
    assert list(table.status) == ["ok", "ok", "subject_not_found"]
    ok = table[table.status == "ok"]
    assert ok.o_noise.str.len().min() > 0
    assert set(grid.case_id) == set(ok.case_id)
    assert set(zip(grid.kind, grid.window)) == {("mlp", 3), ("attn", 1), ("zero", 3)}
    n_tok = int(ok.n_prompt_tokens.iloc[0])
    first = grid[(grid.case_id == ok.case_id.iloc[0]) & (grid.kind == "mlp")]
    assert len(first) == n_tok * 4 and first.is_last_subject.sum() == 4
    eff = layer_effects(grid, table, runs)
    assert len(eff) == 3 * 3 * 4
    assert eff[eff.status == "ok"].effect_frac_max.notna().all()


def test_trace_dataset_checkpoints_resume(
    tiny_gpt2, tiny_tokenizer, counterfact_records, tmp_path, monkeypatch
):
    """A killed shard resumes from its per-fact checkpoints and gives the same tables; other
    settings (a new fingerprint) never reuse them."""
    import locedit.tracing.tables as tt
    from locedit.data.records import flat_fact

    facts = [flat_fact(r) for r in counterfact_records[:3]]
    facts.append({**facts[0], "case_id": 99, "subject": ""})  # untraceable: checkpointed too
    kw = dict(noise_std=0.3, samples=2, seed=0, row_budget=64, o_noise_max_tokens=4)
    args = (tiny_gpt2, tiny_tokenizer, facts, RUNS)
    grid, table = trace_dataset(*args, **kw, cache_dir=tmp_path, fingerprint="a")
    cids = [int(f["case_id"]) for f in facts]
    assert sorted(p.name for p in tmp_path.glob("case_*.json")) == sorted(
        f"case_{c}.json" for c in cids
    )
    # as if killed while tracing the second fact: its grid may exist, its facts row does not
    (tmp_path / f"case_{cids[1]}.json").unlink()
    calls = []
    real = tt._trace_fact

    def counting(model, tok, fact, *a, **k):
        calls.append(int(fact["case_id"]))
        return real(model, tok, fact, *a, **k)

    monkeypatch.setattr(tt, "_trace_fact", counting)
    grid2, table2 = trace_dataset(*args, **kw, cache_dir=tmp_path, fingerprint="a")
    assert calls == [cids[1]]
    pd.testing.assert_frame_equal(grid, grid2)
    pd.testing.assert_frame_equal(table, table2)
    trace_dataset(*args, **kw, cache_dir=tmp_path, fingerprint="b")
    assert calls == [cids[1], *cids]


def test_figures_are_written(tmp_path):
    import matplotlib.pyplot as plt

    from locedit.figures import save_figure
    from locedit.tracing.plots import plot_peak_layers, plot_trace_heatmaps

    grid, facts = _fixture()
    fig = plot_trace_heatmaps(grid, facts, [7])
    assert len(fig.axes) >= 1 and "window 3" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b*", "c"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2"]  # 1-indexed
    save_figure(fig, tmp_path / "h.png", tmp_path / "h.pdf")
    peaks = peak_layers(layer_effects(grid, facts, RUNS), "mlp", 3)
    fig = plot_peak_layers(peaks, 2, [1], "mlp", 3)
    save_figure(fig, tmp_path / "p.png", tmp_path / "p.pdf")
    for name in ("h.png", "h.pdf", "p.png", "p.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    assert not plt.get_fignums()  # closed after saving
    # byte-reproducible, as every stage's figures (no PDF creation date)
    save_figure(plot_trace_heatmaps(grid, facts, [7]), tmp_path / "h2.png", tmp_path / "h2.pdf")
    for ext in ("png", "pdf"):
        assert (tmp_path / f"h.{ext}").read_bytes() == (tmp_path / f"h2.{ext}").read_bytes()
    assert b"CreationDate" not in (tmp_path / "h.pdf").read_bytes()


def test_average_effects_by_rome_token_group():
    """ROME's token groups on hand-made grids: a prompt 'x S1 S2 S3 y z' (subject 1..3) and
    'S y' (one subject token, then the last token); the mean indirect effect per group and
    layer is p_restored - p_noised averaged over facts, several tokens of a group averaged
    within the fact first."""
    from locedit.tracing.plots import average_effects, token_groups

    rows = []
    for t in range(6):  # fact 1: tokens 0..5, subject [1, 4)
        rows += [{"case_id": 1, "kind": "mlp", "window": 1, "token_index": t, "layer": 0,
                  "p_restored": 0.1 * t}]
    for t in range(2):  # fact 2: tokens 0..1, subject [0, 1)
        rows += [{"case_id": 2, "kind": "mlp", "window": 1, "token_index": t, "layer": 0,
                  "p_restored": 0.5 + t}]
    grid = pd.DataFrame(rows)
    facts = pd.DataFrame({"case_id": [1, 2], "subject_start": [1, 0], "subject_end": [4, 1],
                          "p_noised": [0.0, 0.5], "status": ["ok", "ok"]})
    groups = token_groups(grid, facts).tolist()
    assert groups == ["", "first subject token", "middle subject tokens", "last subject token",
                      "first subsequent token", "last token",
                      "last subject token", "last token"]
    avg = average_effects(grid, facts).set_index("group")
    assert avg.loc["last token", "effect"] == pytest.approx((0.5 + 1.0) / 2)
    assert avg.loc["last token", "n_facts"] == 2
    assert avg.loc["last subject token", "effect"] == pytest.approx((0.3 + 0.0) / 2)
    assert avg.loc["middle subject tokens", "effect"] == pytest.approx(0.2)
    assert "further tokens" not in avg.index  # no token beyond the first subsequent but the last
