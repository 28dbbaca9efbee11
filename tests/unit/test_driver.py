"""The edit job loop: apply → evaluate → restore (bit-exact), checkpoints, results table."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from locedit.registry.methods import Method, register_method, unregister_method
from locedit.editing import driver, ft
from locedit.editing.hparams import Hparams
from locedit.editing.driver import EDIT_COLUMNS, collect_shards, edit_one, run_edit_job
from locedit.editing.inputs import prepare_inputs
from locedit.editing.metrics import RECOVERED_FLOOR
from locedit.editing.types import Snapshot

ESSENCE = {"n_texts": 2, "top_k": 5, "max_new_tokens": 6, "max_tokens": 100}
FT = {"lr": 5e-2, "num_steps": 5, "norm_constraint": 2e-2}


def _facts(records):
    return {
        int(r["case_id"]): {
            "is_correct": True,
            "erasure_eligible": True,
            "target_true": r["requested_rewrite"]["target_true"]["str"],
        }
        for r in records
    }


def _cases(model, tok, records, variants):
    out = prepare_inputs(
        model, tok, records, _facts(records), variants=variants, o_noise={0: "Paris", 1: "Paris"},
        noise_std=0.5, essence=ESSENCE, seed=0,
    )  # fmt: skip
    return out["cases"]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model, state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("method", ["ft-1", "ft-5"])
def test_job_restores_weights_bit_exact(tiny_gpt2, tiny_tokenizer, counterfact_records, method):
    state = _state(tiny_gpt2)
    cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:2], ["error_injection", "fact_forcing"])
    df = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, method, 2, FT)
    _assert_same(tiny_gpt2, state)
    assert list(df.columns) == EDIT_COLUMNS and len(df) == 4
    assert (df["method"] == method).all() and (df["layer"] == 2).all()
    assert (df["rewrite_post"] > df["rewrite_pre"]).all()  # the edits did something
    expected = "2" if method == "ft-1" else "0,1,2,3"
    assert (df["edited_layers"] == expected).all()


def test_rome_job_restores_weights_bit_exact(tiny_gpt2, tiny_tokenizer, counterfact_records):
    stats = _random_stats(tiny_gpt2)
    state = _state(tiny_gpt2)
    cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:1], ["error_injection"])
    # A random tiny model needs ROME's weight decay off for v* to move (as in test_rome).
    hp = {"v_weight_decay": 0.0, "clamp_norm_factor": 100.0, "v_num_grad_steps": 3, "early_stop_loss": None}
    for method in ("rome", "memit"):
        df = run_edit_job(
            tiny_gpt2, tiny_tokenizer, cases, method, 1, hp,
            stats=stats, context_templates=["{}", "Hello. {}"],
        )  # fmt: skip
        _assert_same(tiny_gpt2, state)
        assert df["rewrite_post"].iloc[0] != df["rewrite_pre"].iloc[0]


def _likely_word(model, tok, prompt):
    ids = torch.tensor([tok(prompt)["input_ids"]])
    for tid in model(input_ids=ids).logits[0, -1].argsort(descending=True).tolist():
        word = tok.decode([tid])
        if word.startswith(" ") and word.strip().isalpha():
            return word.strip()
    raise AssertionError("no word token")


def test_erasure_lowers_p_true(tiny_gpt2, tiny_tokenizer, counterfact_records):
    rec = copy.deepcopy(counterfact_records[0])
    rw = rec["requested_rewrite"]
    # Make o_true a word the random model finds likely, so p(o_true) has a usable gradient.
    rw["target_true"]["str"] = _likely_word(tiny_gpt2, tiny_tokenizer, rw["prompt"].format(rw["subject"]))
    case = _cases(tiny_gpt2, tiny_tokenizer, [rec], ["fact_erasure"])[0]
    assert case["minimize"] and case["target"] == rw["target_true"]["str"]
    row = edit_one(tiny_gpt2, tiny_tokenizer, case, "ft-1", 3, {**FT, "num_steps": 10, "stop_loss": 0.0})
    assert row["rewrite_post"] < row["rewrite_pre"]
    assert row["rewrite_score"] == pytest.approx(1 - row["rewrite_post"] / row["rewrite_pre"])
    assert row["rewrite_score"] > 0.05


@dataclass(frozen=True)
class NoopHparams(Hparams):
    pass


def apply_noop(model, tok, request, layer, hparams, stats=None, context_templates=None):
    """An edit that changes nothing (registered by the test below only)."""
    return Snapshot(), {}


@pytest.fixture
def noop_method():
    spec = register_method(
        Method("noop", "No-op", "", __name__, "apply_noop", None, NoopHparams)
    )
    yield spec.name
    unregister_method(spec.name)


def test_noop_edit_has_neutral_scores(tiny_gpt2, tiny_tokenizer, counterfact_records, noop_method):
    """With weights unchanged, post-edit values reproduce the stored pre-edit values exactly."""
    cases = _cases(
        tiny_gpt2, tiny_tokenizer, counterfact_records[:1], ["fact_amplification", "fact_forcing"]
    )
    df = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, noop_method, 0, {})
    assert (df["rewrite_post"] == df["rewrite_pre"]).all()
    assert (df["rewrite_score"] == RECOVERED_FLOOR).all()
    assert (df["neighborhood_score"] == 1.0).all() and (df["essence_score"] == 1.0).all()
    assert (df["essence_ppl_post"] == df["essence_ppl_pre"]).all()
    # Fact forcing is scored under the noised subject: its pre-edit p differs from the clean one.
    ff = df.set_index("variant")
    assert ff.loc["fact_forcing", "rewrite_pre"] != ff.loc["fact_amplification", "rewrite_pre"]


def test_checkpoints_resume(tiny_gpt2, tiny_tokenizer, counterfact_records, tmp_path, monkeypatch):
    cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:3], ["error_injection"])
    first = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "ft-1", 1, FT, cache_dir=tmp_path, fingerprint="a")
    # the per-fact path checkpoints every case in a file of its own
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "chunk_0-0_1.json", "chunk_1-1_1.json", "chunk_2-2_1.json"]
    (tmp_path / "chunk_1-1_1.json").unlink()  # as if the job had been killed before case 1 finished
    (tmp_path / ".chunk_1-1_1.json.x1y2.tmp").write_text("{")  # a write the kill cut off
    calls = []
    real = ft.apply_ft

    def counting(model, tok, request, *args):
        calls.append(request.case_id)
        return real(model, tok, request, *args)

    monkeypatch.setattr(ft, "apply_ft", counting)  # the registry looks the function up per job
    again = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "ft-1", 1, FT, cache_dir=tmp_path, fingerprint="a")
    assert calls == [1]
    assert not list(tmp_path.glob("*.tmp"))  # the cut-off write is removed, never read
    cols = [c for c in EDIT_COLUMNS if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(first[cols], again[cols])
    # Other settings (a new fingerprint) never reuse these checkpoints.
    run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "ft-1", 1, FT, cache_dir=tmp_path, fingerprint="b")
    assert calls == [1, 0, 1, 2]
    assert (tmp_path / "FINGERPRINT").read_text() == "b"


def test_engine_resume_recomputes_a_cut_off_chunk_whole(
    tiny_gpt2, tiny_tokenizer, counterfact_records, tmp_path, monkeypatch
):
    """The batched engine's results depend on which facts share a batch, so a resumed job
    recomputes a partly checkpointed chunk whole: bit-identical to an uninterrupted run, while
    fully checkpointed chunks are reused."""
    cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:3], ["error_injection"])
    engine = {"row_budget": 64, "max_facts": 8, "chunk": 2}
    first = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "ft-1", 1, FT, cache_dir=tmp_path,
                         fingerprint="a", engine=engine)
    # a chunk is one file, written when all of it is done
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["chunk_0-1_2.json", "chunk_2-2_1.json"]
    (tmp_path / "chunk_0-1_2.json").unlink()  # chunk [0, 1] cut off; chunk [2] done
    batches = []
    real = ft.edit_ft_batch

    def recording(model, tok, requests, *args, **kw):
        batches.append([r.case_id for r in requests])
        return real(model, tok, requests, *args, **kw)

    monkeypatch.setattr(ft, "edit_ft_batch", recording)
    again = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "ft-1", 1, FT, cache_dir=tmp_path,
                         fingerprint="a", engine=engine)
    assert batches == [[0, 1]]
    cols = [c for c in EDIT_COLUMNS if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(first[cols], again[cols])


def test_collect_shards(tmp_path):
    rows = [
        {"case_id": c, "variant": "fact_erasure", "method": m, "layer": 1, "rewrite_score": 0.5}
        for m in ("rome", "ft-1")
        for c in (2, 1)
    ]
    pd.DataFrame(rows[:2]).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame(rows[2:]).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame().to_parquet(tmp_path / "empty.parquet")  # a shard without eligible facts
    df = collect_shards([tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "empty.parquet"])
    assert list(df.columns) == EDIT_COLUMNS
    assert list(zip(df["method"], df["case_id"])) == [("ft-1", 1), ("ft-1", 2), ("rome", 1), ("rome", 2)]
    with pytest.raises(ValueError, match="duplicate edits"):
        collect_shards([tmp_path / "a.parquet", tmp_path / "a.parquet"])


def test_bad_layer_names_config_key(tiny_gpt2, tiny_tokenizer):
    with pytest.raises(ValueError, match="editing.layers"):
        run_edit_job(tiny_gpt2, tiny_tokenizer, [], "ft-1", 9, {})
    with pytest.raises(ValueError, match="unknown editing method"):
        run_edit_job(tiny_gpt2, tiny_tokenizer, [], "ft-3", 1, {})


def test_prepare_inputs_skips_ineligible_and_shares_essence(tiny_gpt2, tiny_tokenizer, counterfact_records):
    recs = counterfact_records[:3]
    facts = _facts(recs)
    facts[0]["is_correct"] = False
    facts[1]["erasure_eligible"] = False
    out = prepare_inputs(
        tiny_gpt2, tiny_tokenizer, recs, facts,
        variants=["fact_erasure", "tracing_reversal", "fact_forcing"],
        o_noise={1: "Paris"}, noise_std=0.5, essence=ESSENCE, seed=0,
    )  # fmt: skip
    skipped = {(s["case_id"], s["variant"]): s["reason"] for s in out["skipped"]}
    assert skipped[(0, "fact_erasure")] == "not is_correct"
    assert skipped[(1, "fact_erasure")] == "not erasure_eligible"
    assert skipped[(2, "tracing_reversal")] == "no o_noise"
    done = {(c["case_id"], c["variant"]) for c in out["cases"]}
    assert done == {(1, "tracing_reversal"), (1, "fact_forcing"), (2, "fact_erasure"), (2, "fact_forcing")}
    by = {(c["case_id"], c["variant"]): c for c in out["cases"]}
    # Essence texts are per fact (shared by its variants); FF perplexity is under noise.
    assert by[(2, "fact_erasure")]["essence_texts"] == by[(2, "fact_forcing")]["essence_texts"]
    assert len(by[(2, "fact_erasure")]["essence_texts"]) == ESSENCE["n_texts"]
    assert by[(2, "fact_erasure")]["essence_ppl_pre"] != by[(2, "fact_forcing")]["essence_ppl_pre"]
    again = prepare_inputs(
        tiny_gpt2, tiny_tokenizer, recs, facts,
        variants=["fact_erasure", "tracing_reversal", "fact_forcing"],
        o_noise={1: "Paris"}, noise_std=0.5, essence=ESSENCE, seed=0,
    )  # fmt: skip
    assert again == out  # deterministic
    # The workflow samples essence texts once per shard (sample_essence) and reuses them.
    from locedit.editing.inputs import sample_essence

    ess = sample_essence(tiny_gpt2, tiny_tokenizer, recs, facts, essence=ESSENCE, seed=0)
    assert sorted(ess) == [1, 2]  # fact 0 is not known: no texts
    shared = prepare_inputs(
        tiny_gpt2, tiny_tokenizer, recs, facts,
        variants=["fact_erasure", "tracing_reversal", "fact_forcing"],
        o_noise={1: "Paris"}, noise_std=0.5, essence=ESSENCE, seed=0, essence_texts=ess,
    )  # fmt: skip
    assert shared == out


def test_prepare_inputs_checkpoints_resume(
    tiny_gpt2, tiny_tokenizer, counterfact_records, tmp_path, monkeypatch
):
    """A killed prepare_edit_inputs job resumes from its per-record checkpoints and writes the
    same inputs; other settings (a new fingerprint) never reuse them."""
    import json

    import locedit.editing.inputs as inputs_mod

    recs = counterfact_records[:3]
    facts = _facts(recs)
    facts[0]["is_correct"] = False  # a record with nothing but skips is checkpointed too
    kw = dict(
        variants=["error_injection", "fact_forcing"], o_noise={}, noise_std=0.5,
        essence=ESSENCE, seed=0,
    )  # fmt: skip
    args = (tiny_gpt2, tiny_tokenizer, recs, facts)
    out = prepare_inputs(*args, **kw, cache_dir=tmp_path, fingerprint="a")
    cids = [int(r["case_id"]) for r in recs]
    assert sorted(p.name for p in tmp_path.glob("case_*.json")) == [f"case_{c}.json" for c in cids]
    (tmp_path / f"case_{cids[1]}.json").unlink()  # as if killed while preparing the second
    calls = []  # case_id of every eligibility check: once per variant of a prepared record
    real = inputs_mod.eligibility

    def counting(variant, fact, **k):
        calls.append(next(c for c, f in facts.items() if f is fact))
        return real(variant, fact, **k)

    monkeypatch.setattr(inputs_mod, "eligibility", counting)
    again = prepare_inputs(*args, **kw, cache_dir=tmp_path, fingerprint="a")
    assert calls == [cids[1]] * 2
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)
    assert again["skipped"] and again["cases"]
    prepare_inputs(*args, **kw, cache_dir=tmp_path, fingerprint="b")
    assert calls == [cids[1]] * 2 + [c for c in cids for _ in range(2)]


@pytest.mark.parametrize("method", ["rome", "memit", "ft-1", "ft-5"])
def test_engine_rows_equal_per_fact_rows(tiny_gpt2, tiny_tokenizer, counterfact_records, method, unfused_engines):
    """The batched engine's results equal the per-fact path's to float rounding, on every editing
    problem but tracing reversal (which needs o_noise).

    "Float rounding" is measured, not assumed: both float32 paths are compared with the per-fact
    path run in float64. MEMIT's residual z − h cancels when an edit moves little, which
    amplifies rounding in *any* float32 implementation (README, Editing engine), so each column
    of the engine must be at most as far from float64 as the per-fact float32 path is (within a
    factor of 4: rounding errors of both are random), or within float32's resolution (2e-6 + 1e-6 of the column's size: essence
    perplexities are in the hundreds on a random model). With the model's own GELU (``unfused_engines``:
    see tests/models/test_editing_engine.py).
    """
    from locedit.editing.covariance import CovarianceStore

    variants = ["error_injection", "fact_erasure", "fact_amplification", "fact_forcing"]
    d_mlp = 4 * tiny_gpt2.config.n_embd
    stats = CovarianceStore(lambda layer: torch.eye(d_mlp) * (1.0 + layer))
    templates = ["{}", "The team won. {}", "After the long war ended. {}"]
    hp = {
        "rome": {"v_num_grad_steps": 6, "v_weight_decay": 0.0, "clamp_norm_factor": 100.0},
        "memit": {"v_num_grad_steps": 6, "mom2_update_weight": 10.0, "window": 3},
        "ft-1": {**FT, "stop_loss": 0.0},  # erasure of a random model's ~1e-12 is below 1e-2
        "ft-5": {**FT, "stop_loss": 0.0},
    }[method]
    exact = copy.deepcopy(tiny_gpt2).double()
    before = _state(tiny_gpt2)
    scores = [c for c in EDIT_COLUMNS if c.endswith(("_score", "_pre", "_post", "_success", "_magnitude"))]
    for variant in variants:
        cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:4], [variant])
        kw = dict(stats=stats, context_templates=templates)
        ref = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, method, 2, hp, **kw)
        new = run_edit_job(
            tiny_gpt2, tiny_tokenizer, cases, method, 2, hp, engine={"row_budget": 8, "max_facts": 2}, **kw
        )
        f64 = run_edit_job(exact, tiny_tokenizer, cases, method, 2, hp, **kw)
        assert len(new) == len(cases) and (new["rewrite_post"] != new["rewrite_pre"]).all()
        for col in scores:
            if f64[col].isna().all():  # the generalisation probes, off here
                assert new[col].isna().all() and ref[col].isna().all(), col
                continue
            err_ref = (ref[col] - f64[col]).abs().max()
            err_new = (new[col] - f64[col]).abs().max()
            floor = 2e-6 + 1e-6 * f64[col].abs().max()
            assert err_new <= max(4 * err_ref, floor), (variant, col, err_new, err_ref)
    _assert_same(tiny_gpt2, before)


def _random_stats(model):
    from locedit.adapters import edit_weight, n_layers
    from locedit.editing.covariance import CovarianceStore

    d = edit_weight(model, 0).shape[0]  # Conv1D: [d_mlp, d_model]
    g = torch.Generator().manual_seed(0)
    mats = {}
    for layer in range(n_layers(model)):
        a = torch.randn(d, 4 * d, generator=g)
        mats[layer] = a @ a.T / (4 * d) + 0.1 * torch.eye(d)
    return CovarianceStore.from_matrices(mats)


@pytest.mark.parametrize("engine", [None, {"row_budget": 8, "max_facts": 2}])
def test_r_rome_replayed_from_rome_vectors_equals_r_rome_itself(
    tiny_gpt2, tiny_tokenizer, counterfact_records, tmp_path, engine
):
    """The workflow's r-ROME jobs replay the v*, u, k* their ROME job exported (through its
    vectors file, and its checkpoints on a resume) instead of optimising them again; the rows
    equal r-ROME optimising them itself, bit for bit, timings aside."""
    from locedit.editing.vectors import read_edit_vectors, write_edit_vectors

    stats = _random_stats(tiny_gpt2)
    cases = _cases(tiny_gpt2, tiny_tokenizer, counterfact_records[:3], ["error_injection"])
    hp = {"v_weight_decay": 0.0, "clamp_norm_factor": 100.0, "v_num_grad_steps": 3, "early_stop_loss": None}
    kw = {"stats": stats, "context_templates": ["{}", "Hello. {}"], "engine": engine}
    state = _state(tiny_gpt2)
    itself = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "r-rome", 1, hp, **kw)
    exported: dict = {}
    rome = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "rome", 1, hp, exported=exported,
                        cache_dir=tmp_path / "c", fingerprint="a", **kw)  # fmt: skip
    assert sorted(exported) == sorted(int(c["case_id"]) for c in cases)
    again: dict = {}  # a resumed job's vectors come from its checkpoints
    run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "rome", 1, hp, exported=again,
                 cache_dir=tmp_path / "c", fingerprint="a", **kw)  # fmt: skip
    for case_id, vectors in exported.items():
        assert all(torch.equal(vectors[n], again[case_id][n]) for n in vectors)
    path = tmp_path / "rome.vectors.safetensors"
    write_edit_vectors(exported, dict(zip(rome["case_id"], rome["opt_seconds"])), path)
    replayed = read_edit_vectors(path)
    # each fact's vectors are fresh tensors: BLAS rounds a misaligned row view of the file's
    # [n, d] tensor differently (1e-7 on the toy), which would break bit-equality
    assert all(v.storage_offset() == 0 for vectors, _ in replayed.values() for v in vectors.values())
    replay = run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "r-rome", 1, hp, replayed=replayed, **kw)
    _assert_same(tiny_gpt2, state)
    timing = ["opt_seconds", "update_seconds", "eval_seconds", "edit_seconds"]
    pd.testing.assert_frame_equal(replay.drop(columns=timing), itself.drop(columns=timing))
    assert replay["opt_seconds"].tolist() == rome["opt_seconds"].tolist()  # ROME's v* cost
    assert not replay["rewrite_post"].equals(rome["rewrite_post"])  # r-ROME ≠ ROME
    with pytest.raises(ValueError, match="no exported vectors"):
        run_edit_job(tiny_gpt2, tiny_tokenizer, cases, "r-rome", 1, hp, replayed={}, **kw)
