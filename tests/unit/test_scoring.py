"""Batched teacher-forced scoring equals scoring one pair at a time (padding cannot leak)."""

import math

import pytest
import torch

from locedit.scoring import contains_target, encode_prompt_target, target_logprobs


def _single(model, tok, prompt, target):
    p, t = encode_prompt_target(tok, prompt, target)
    ids = torch.tensor([p + t])
    logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logp[len(p) - 1 + j, t[j]].item() for j in range(len(t)))


def test_batched_equals_single(tiny_gpt2, tiny_tokenizer, counterfact_records):
    prompts, targets = [], []
    for rec in counterfact_records:
        rw = rec["requested_rewrite"]
        prompts += [rw["prompt"].format(rw["subject"])] * 2
        targets += [rw["target_true"]["str"], rw["target_new"]["str"]]
    batched = target_logprobs(tiny_gpt2, tiny_tokenizer, prompts, targets, batch_size=4)
    for i, (p, t) in enumerate(zip(prompts, targets)):
        assert batched[i].item() == pytest.approx(_single(tiny_gpt2, tiny_tokenizer, p, t), abs=1e-4)


def test_target_ids_use_leading_space(tiny_tokenizer):
    p, t = encode_prompt_target(tiny_tokenizer, "The mother tongue of Danielle Darrieux is", "French")
    assert tiny_tokenizer.decode(t) == " French"
    assert tiny_tokenizer.decode(p + t).endswith("is French")


def test_multi_token_target_is_product_of_token_probs(tiny_gpt2, tiny_tokenizer):
    prompt, target = "Toko Yasuda produces the most amazing music on the", "guitar piano"
    lp = target_logprobs(tiny_gpt2, tiny_tokenizer, [prompt], [target])[0].item()
    _, t = encode_prompt_target(tiny_tokenizer, prompt, target)
    assert len(t) > 1
    assert math.isclose(lp, _single(tiny_gpt2, tiny_tokenizer, prompt, target), abs_tol=1e-4)


def test_empty_target_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="empty target"):
        encode_prompt_target(tiny_tokenizer, "x", " ")


def test_contains_target_is_case_insensitive():
    assert contains_target(" the city of PARIS, France", "Paris")
    assert not contains_target(" the city of Lyon", "Paris")
