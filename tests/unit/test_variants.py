"""Editing problems: target choice, eligibility, fact-forcing noise and where it is applied."""

from __future__ import annotations

import pytest
import torch

from locedit.adapters import d_model
from locedit.editing.evaluate import probe_probabilities
from locedit.seeds import derived_seed
from locedit.editing.variants import (
    VARIANTS,
    build_case,
    build_request,
    case_noise,
    eligibility,
)

FACT = {"is_correct": True, "erasure_eligible": True, "target_true": "French"}


def _case(records, variant, **kw):
    kw.setdefault("o_noise", "the city")
    kw.setdefault("noise_std", 0.5)
    return build_case(records[0], variant, **kw)


def test_targets_and_contrasts(counterfact_records):
    rw = counterfact_records[0]["requested_rewrite"]
    o_true, o_false = rw["target_true"]["str"], rw["target_new"]["str"]
    expected = {
        "error_injection": (o_false, o_true, False),
        "tracing_reversal": ("the city", o_true, False),
        "fact_erasure": (o_true, o_false, True),
        "fact_amplification": (o_true, o_false, False),
        "fact_forcing": (o_true, o_false, False),
    }
    for variant in VARIANTS:
        case = _case(counterfact_records, variant)
        assert (case["target"], case["contrast"], case["minimize"]) == expected[variant]
        assert case["noised"] == (variant == "fact_forcing")
        assert case["neighborhood_target"] == case["target"]
    assert _case(counterfact_records, "fact_erasure", neighborhood_target="o_false")[
        "neighborhood_target"
    ] == o_false


def test_eligibility_rules():
    assert eligibility("error_injection", FACT, o_noise=None) is None
    assert eligibility("error_injection", {**FACT, "is_correct": False}, o_noise=None) == "not is_correct"
    assert eligibility(
        "error_injection", {**FACT, "is_correct": False}, o_noise=None, only_correct=False
    ) is None
    not_eligible = {**FACT, "erasure_eligible": False}
    assert eligibility("fact_erasure", not_eligible, o_noise=None) == "not erasure_eligible"
    assert eligibility("fact_amplification", not_eligible, o_noise=None) is None
    assert eligibility("fact_erasure", not_eligible, o_noise=None, erasure_only_eligible=False) is None
    assert eligibility("tracing_reversal", FACT, o_noise="") == "no o_noise"
    assert eligibility("tracing_reversal", FACT, o_noise=float("nan")) == "no o_noise"
    assert eligibility("tracing_reversal", FACT, o_noise=" French") == "o_noise equals o_true"
    assert eligibility("tracing_reversal", FACT, o_noise="Paris") is None
    with pytest.raises(ValueError, match="unknown editing variant"):
        eligibility("fact_injection", FACT, o_noise=None)


def test_bad_inputs_name_the_case(counterfact_records):
    with pytest.raises(ValueError, match="case_id 0: tracing_reversal needs an o_noise"):
        build_case(counterfact_records[0], "tracing_reversal", o_noise=None)
    with pytest.raises(ValueError, match="case_id 0: fact_forcing needs a positive noise_std"):
        build_case(counterfact_records[0], "fact_forcing", o_noise=None)


def test_fact_forcing_noise_is_seeded_per_case(counterfact_records, tiny_tokenizer, tiny_gpt2):
    dm = d_model(tiny_gpt2)
    a = case_noise(_case(counterfact_records, "fact_forcing", seed=3), tiny_tokenizer, dm)
    b = case_noise(_case(counterfact_records, "fact_forcing", seed=3), tiny_tokenizer, dm)
    c = case_noise(_case(counterfact_records, "fact_forcing", seed=4), tiny_tokenizer, dm)
    other = build_case(counterfact_records[1], "fact_forcing", o_noise=None, noise_std=0.5, seed=3)
    d = case_noise(other, tiny_tokenizer, dm)
    assert torch.equal(a, b) and not torch.equal(a[:2], c[:2]) and not torch.equal(a[:2], d[:2])
    assert a.std().item() == pytest.approx(0.5, rel=0.3)
    assert case_noise(_case(counterfact_records, "fact_amplification"), tiny_tokenizer, dm) is None
    req = build_request(_case(counterfact_records, "fact_forcing", seed=3), tiny_tokenizer, dm)
    assert torch.equal(req.noise, a) and req.target == "French" and not req.minimize
    assert derived_seed(0, 1, "x") == derived_seed(0, 1, "x") != derived_seed(0, 2, "x")


def test_fact_forcing_noises_subject_prompts_only(counterfact_records, tiny_tokenizer, tiny_gpt2):
    case = _case(counterfact_records, "fact_forcing", noise_std=2.0)
    noise = case_noise(case, tiny_tokenizer, d_model(tiny_gpt2))
    clean = probe_probabilities(tiny_gpt2, tiny_tokenizer, case)
    noised = probe_probabilities(tiny_gpt2, tiny_tokenizer, case, noise=noise)

    def rel(a, b):
        return abs(a - b) / b

    assert rel(noised["rewrite"]["target"][0], clean["rewrite"]["target"][0]) > 1e-4
    for a, b in zip(noised["paraphrase"]["target"], clean["paraphrase"]["target"]):
        assert rel(a, b) > 1e-4  # every paraphrase contains the subject
    # Neighborhood prompts do not contain the subject: untouched.
    for a, b in zip(noised["neighborhood"]["target"], clean["neighborhood"]["target"]):
        assert rel(a, b) < 1e-5
    assert len(clean["neighborhood"]["nbr"]) == len(counterfact_records[0]["neighborhood_prompts"])


def test_subject_span_in_context_prompts(counterfact_records, tiny_tokenizer):
    from locedit.editing.essence import text_subject_span

    rec = counterfact_records[0]
    subject = rec["requested_rewrite"]["subject"]
    for text in rec["paraphrase_prompts"] + [f"{subject} is a French actress"]:
        start, end = text_subject_span(tiny_tokenizer, text, subject)
        ids = tiny_tokenizer(text)["input_ids"]
        assert tiny_tokenizer.decode(ids[start:end]).strip() == subject
        assert start > 0 or text.startswith(subject)
    assert text_subject_span(tiny_tokenizer, "no subject here", subject) is None


def test_essence_sampling_is_seeded_and_perplexity_sane(tiny_gpt2, tiny_tokenizer):
    from locedit.editing.essence import perplexities, sample_texts

    prompt = "Danielle Darrieux is a"
    a = sample_texts(tiny_gpt2, tiny_tokenizer, prompt, n=3, max_new_tokens=5, seed=1)
    b = sample_texts(tiny_gpt2, tiny_tokenizer, prompt, n=3, max_new_tokens=5, seed=1)
    c = sample_texts(tiny_gpt2, tiny_tokenizer, prompt, n=3, max_new_tokens=5, seed=2)
    assert a == b and a != c and len(a) == 3
    assert all(t.startswith(prompt) and len(t) > len(prompt) for t in a)
    ppl = perplexities(tiny_gpt2, tiny_tokenizer, a)
    vocab = len(tiny_tokenizer)
    assert all(1.0 < p < 10 * vocab for p in ppl)
    # Truncation to max_tokens changes what is scored.
    assert perplexities(tiny_gpt2, tiny_tokenizer, a, max_tokens=3) != ppl
