"""Generalisation probes, scored on constructed edits whose answers are known.

The model is the tiny random GPT-2 with its final LayerNorm bias pointed at the old object's
embedding, so that it answers the old object o on every prompt: every route "knows" the fact
(a real greedy check, not a flag). Its embeddings are tied to the unembedding, so swapping the
rows of o and the new object y relabels the two tokens everywhere: an "edit" that changes the
fact itself, whatever route reaches it. A no-op edit changes nothing.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from locedit.editing.evaluate import probe_probabilities
from locedit.editing.metrics import recovered_fraction
from locedit.editing.probes import COLUMNS, case_probes, other_subjects_index, probe_scores
from locedit.editing.variants import build_case

#: Candidate object words, in none of the test's prompts; the first two single tokens are used.
WORDS = ("French", "English", "Madrid", "Lyon", "Edwin", "Adams")


def _single_tokens(tok) -> tuple[str, str]:
    single = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(single) >= 2, single
    return single[0], single[1]


def _record(subject: str, relation: str, o: str, y: str, cid: int = 0, **extra) -> dict:
    return {
        "case_id": cid,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "subject": subject,
            "relation_id": relation,
            "target_true": {"str": o},
            "target_new": {"str": y},
        },
        "paraphrase_prompts": [f"Long ago. {subject} speaks"],
        "neighborhood_prompts": ["The mother tongue of Montesquieu is"],
        **extra,
    }


@pytest.fixture(scope="module")
def setup(tiny_gpt2, tiny_tokenizer):
    tok = tiny_tokenizer
    o, y = _single_tokens(tok)
    o_id, y_id = (tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in (o, y))
    model = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():  # every prompt now continues with o (its logit rises by 30)
        w_o = model.transformer.wte.weight[o_id]
        model.transformer.ln_f.bias.copy_(30.0 * w_o / w_o.dot(w_o))
    record = _record(
        "Danielle Darrieux", "P103", o, y,
        alias_prompts=["The mother tongue of Dani is", "Dani grew up speaking"],
        description_prompts=["The mother tongue of the founder of Velmora is"],
        reverse_prompts=["The most famous native speaker of {} is"],
    )  # fmt: skip
    others = [
        _record("Léon Blum", "P103", "Polish", y, cid=1),  # neither o nor y: an over-reach prompt
        _record("Montesquieu", "P103", o, y, cid=2),  # answers o: not an over-reach prompt
        _record("Lyon", "P190", "Beirut", y, cid=3),  # another relation
    ]
    case = build_case(record, "error_injection", o_noise=None)
    case["probes"] = case_probes(
        record, case, other_subjects_index([record, *others]), other_subjects=5,
        generic_prompts=["{} is a", "Yesterday {} said that the"],
    )  # fmt: skip
    case["pre"], case["pre_greedy"] = probe_probabilities(model, tok, case, greedy=True)
    return model, tok, case, (o_id, y_id)


def _swapped(model, o_id: int, y_id: int):
    edited = copy.deepcopy(model)
    with torch.no_grad():
        w = edited.transformer.wte.weight
        w[[o_id, y_id]] = w[[y_id, o_id]].clone()
    assert edited.lm_head.weight.data_ptr() == w.data_ptr()  # tied: the swap is a relabelling
    return edited


def test_case_probes_pick_routes_and_other_subjects(setup):
    _, _, case, _ = setup
    probes = case["probes"]
    assert probes["alias"] == ["The mother tongue of Dani is", "Dani grew up speaking"]
    assert probes["reverse_new"] == [f"The most famous native speaker of {case['target']} is"]
    assert probes["reverse_old"] == [f"The most famous native speaker of {case['true_object']} is"]
    assert probes["other_subjects"] == ["The mother tongue of Léon Blum is"]
    assert probes["generic"] == [
        "Danielle Darrieux is a",
        "Yesterday Danielle Darrieux said that the",
    ]


def test_greedy_hits_are_real(setup):
    _, _, case, _ = setup
    greedy = case["pre_greedy"]
    assert all(greedy["alias"]["old"]) and not any(greedy["alias"]["new"])
    assert not any(greedy["reverse_old"]["subject"])  # the biased model never says the subject


def test_swap_edit_transfers_to_every_route(setup):
    model, tok, case, (o_id, y_id) = setup
    case = dict(case, pre_greedy=copy.deepcopy(case["pre_greedy"]))
    case["pre_greedy"]["reverse_old"]["subject"] = [True]  # score the reverse rows regardless
    post = probe_probabilities(_swapped(model, o_id, y_id), tok, case)
    row = probe_scores(case, case["pre"], post, case["pre_greedy"])
    pre = case["pre"]
    for fam in ("alias", "description"):
        assert row[f"{fam}_n"] == len(case["probes"][fam])
        assert row[f"{fam}_post"] == pytest.approx(
            sum(pre[fam]["old"]) / len(pre[fam]["old"]), abs=1e-9
        )
        assert row[f"{fam}_post"] > 0.99 and row[f"{fam}_score"] > 0.99
    # Reverse: y now reads as o did, so p(s | "... of y is") is the old p(s | "... of o is").
    assert row["reverse_post"] == pytest.approx(row["reverse_old_pre"], rel=1e-6)
    assert row["reverse_old_post"] == pytest.approx(row["reverse_pre"], rel=1e-6)
    assert row["reverse_score"] == pytest.approx(
        recovered_fraction(row["reverse_pre"], row["reverse_post"]), rel=1e-9
    )
    # Over-reach: y turns up exactly as often as o did before; never more often.
    for fam in ("other_subjects", "generic"):
        assert row[f"overreach_{fam}"] == pytest.approx(0.0, abs=1e-9)
        assert row[f"overreach_{fam}_new_post"] > 0.99
        assert row[f"overreach_{fam}_rate"] <= 0.5  # ties broken by float rounding at most


def test_noop_edit_transfers_to_none(setup):
    model, tok, case, _ = setup
    post = probe_probabilities(model, tok, case)
    row = probe_scores(case, case["pre"], post, case["pre_greedy"])
    for fam in ("alias", "description"):
        assert row[f"{fam}_post"] == row[f"{fam}_pre"] < 0.01
        assert row[f"{fam}_score"] < 1e-6
    assert row["reverse_n"] == 0 and math.isnan(row["reverse_score"])  # not known in reverse
    for fam in ("other_subjects", "generic"):
        assert row[f"overreach_{fam}"] < -0.99 and row[f"overreach_{fam}_rate"] == 0.0


def test_route_not_known_before_the_edit_is_not_scored(setup):
    _, _, case, _ = setup
    greedy = copy.deepcopy(case["pre_greedy"])
    greedy["alias"]["old"] = [False, True]
    row = probe_scores(case, case["pre"], case["pre"], greedy)
    assert row["alias_n"] == 1
    assert row["alias_pre"] == case["pre"]["alias"]["new"][1]


def test_no_probes_gives_nan_columns(setup):
    _, _, case, _ = setup
    row = probe_scores(case, case["pre"], case["pre"], None)
    assert set(row) == set(COLUMNS) and all(math.isnan(v) for v in row.values())


@pytest.mark.parametrize("variant", ["fact_amplification", "fact_forcing"])
def test_which_problems_get_which_probes(setup, variant):
    _, _, case, _ = setup
    record = _record(
        "Danielle Darrieux", "P103", case["true_object"], case["target"],
        alias_prompts=["Dani grew up speaking"], reverse_prompts=["The best speaker of {} is"],
    )  # fmt: skip
    other = build_case(record, variant, o_noise=None, noise_std=0.5)
    probes = case_probes(record, other, {}, other_subjects=5, generic_prompts=["{} is a"])
    if variant == "fact_forcing":
        assert probes is None  # a noised-subject edit has no route without the subject
    else:  # the target is the true object: no reverse or over-reach question
        assert probes["alias"] == ["Dani grew up speaking"]
        assert not probes["reverse_new"] and not probes["other_subjects"] and not probes["generic"]


def test_edit_job_writes_probe_columns(tiny_gpt2, tiny_tokenizer, counterfact_records):
    """prepare_inputs → run_edit_job with probes on: the columns reach the results table, the
    pre-edit greedy hits travel in the case, and probes off leaves them NaN."""
    from locedit.editing.driver import EDIT_COLUMNS, run_edit_job
    from locedit.editing.inputs import prepare_inputs

    records = copy.deepcopy(counterfact_records[:3])
    records[0]["alias_prompts"] = ["The mother tongue of Dani is"]
    records[0]["reverse_prompts"] = ["The most famous native speaker of {} is"]
    facts = {int(r["case_id"]): {"is_correct": True, "erasure_eligible": True,
             "target_true": r["requested_rewrite"]["target_true"]["str"]} for r in records}  # fmt: skip
    essence = {"n_texts": 1, "top_k": 5, "max_new_tokens": 4, "max_tokens": 100}
    settings = {"enabled": True, "other_subjects": 5, "generic_prompts": ["{} is a"]}
    kw = dict(variants=["error_injection"], o_noise={}, noise_std=None, essence=essence, seed=0)
    on = prepare_inputs(tiny_gpt2, tiny_tokenizer, records, facts, **kw, probes=settings,
                        others=other_subjects_index(records))["cases"]  # fmt: skip
    off = prepare_inputs(tiny_gpt2, tiny_tokenizer, records, facts, **kw)["cases"]
    assert "pre_greedy" in on[0] and "probes" not in off[0]
    ft = {"lr": 5e-2, "num_steps": 3, "norm_constraint": 2e-2}
    df_on = run_edit_job(tiny_gpt2, tiny_tokenizer, on, "ft-1", 1, ft)
    df_off = run_edit_job(tiny_gpt2, tiny_tokenizer, off, "ft-1", 1, ft)
    assert list(df_on.columns) == EDIT_COLUMNS and set(COLUMNS) <= set(EDIT_COLUMNS)
    row = df_on.set_index("case_id").loc[records[0]["case_id"]]
    assert row["alias_n"] in (0, 1) and row["reverse_n"] in (0, 1)
    assert row["overreach_generic_new_post"] == row["overreach_generic_new_post"]  # scored
    assert df_off[list(COLUMNS)].isna().all().all()
    # The paper's metrics do not depend on whether probes ran alongside them.
    pd_cols = ["rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score"]
    assert (df_on[pd_cols].to_numpy() == df_off[pd_cols].to_numpy()).all()
