"""Generation-based scores: the greedy check read from the teacher-forced pass is greedy
generation itself, and the columns follow the editing problem's direction."""

from __future__ import annotations

import math

import torch

from locedit.editing.evaluate import probe_probabilities
from locedit.editing.metrics import GEN_COLUMNS, generation_scores
from locedit.scoring import encode_prompt_target

#: rewrite, paraphrase and neighbourhood prompts (the first is the case's "{} plays the")
PROMPTS = ["Toko Yasuda plays the", "The mother tongue of Toko Yasuda is", "The mother tongue of Danielle Darrieux is"]


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_hits_are_what_greedy_generation_produces(tiny_gpt2, tiny_tokenizer):
    """For every probe row, 'hit' (every target token the argmax after the ones before it, read
    from the teacher-forced pass) equals: model.generate's greedy continuation starts with the
    target's tokens. Targets: each prompt's own greedy continuation (hits) and other words."""
    tok, model = tiny_tokenizer, tiny_gpt2
    own = {}
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        own[p] = tok.decode(_greedy(model, ids, 2)).strip()
    case = {"prompt": "{} plays the", "subject": "Toko Yasuda", "target": own[PROMPTS[0]],
            "contrast": "French", "paraphrase_prompts": PROMPTS[1:2], "neighborhood_prompts": PROMPTS[2:],
            "neighborhood_target": own[PROMPTS[2]], "true_object": "Japanese"}
    _, hits = probe_probabilities(model, tok, case, greedy=True)
    targets = {"target": case["target"], "contrast": "French", "nbr": case["neighborhood_target"]}
    checked = []
    for fam, prompts in (("rewrite", PROMPTS[:1]), ("paraphrase", PROMPTS[1:2]), ("neighborhood", PROMPTS[2:])):
        for role, got in hits[fam].items():
            for prompt, hit in zip(prompts, got):
                p_ids, t_ids = encode_prompt_target(tok, prompt, targets[role])
                checked.append((hit, _greedy(model, p_ids, len(t_ids)) == t_ids))
    assert all(hit == generated for hit, generated in checked), checked
    assert any(hit for hit, _ in checked) and not all(hit for hit, _ in checked)  # both outcomes seen


def _hits(rewrite, paraphrase, nbr):
    return {"rewrite": {"target": rewrite}, "paraphrase": {"target": paraphrase}, "neighborhood": {"nbr": nbr}}


def test_generation_scores_follow_the_problem():
    pre = _hits([False], [False, False], [True, True, False, True])
    post = _hits([True], [True, False], [True, False, False, True])
    row = generation_scores({"minimize": False}, pre, post)
    assert set(row) == set(GEN_COLUMNS)
    assert (row["gen_rewrite_pre"], row["gen_rewrite_post"], row["gen_rewrite_score"]) == (0.0, 1.0, 1.0)
    assert row["gen_paraphrase_score"] == 0.5 and row["gen_neighborhood_pre"] == 0.75
    assert row["gen_neighborhood_post"] == 0.5 and row["gen_neighborhood_score"] == 0.75  # 3 of 4 kept
    erased = generation_scores({"minimize": True}, post, pre)  # fact erasure: the target is gone
    assert erased["gen_rewrite_score"] == 1.0 and erased["gen_paraphrase_score"] == 1.0
    missing = generation_scores({"minimize": False}, {}, post)  # inputs made before the columns
    assert all(math.isnan(v) for v in missing.values())


def test_an_edit_row_carries_the_generation_columns():
    from locedit.editing.driver import EDIT_COLUMNS

    assert [c for c in EDIT_COLUMNS if c.startswith("gen_")] == GEN_COLUMNS
