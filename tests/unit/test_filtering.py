"""The known-fact filter: probabilities, correctness and erasure eligibility per record."""

import numpy as np

from locedit.data.filtering import filter_known_facts
from locedit.scoring import contains_target, greedy_continuations, target_logprobs


def test_filter_columns_and_consistency(tiny_gpt2, tiny_tokenizer, counterfact_records):
    facts = filter_known_facts(
        tiny_gpt2, tiny_tokenizer, counterfact_records, max_new_tokens=8, batch_size=2
    )
    assert list(facts["case_id"]) == [0, 1, 2, 3, 4]
    for col in ["subject", "prompt", "relation_id", "target_true", "target_new", "p_true",
                "p_new", "is_correct", "erasure_eligible", "continuation"]:
        assert col in facts
    prompts = [p.format(s) for p, s in zip(facts["prompt"], facts["subject"])]
    # Probabilities are the (unbatched) sequence probabilities of the full targets.
    lp = target_logprobs(tiny_gpt2, tiny_tokenizer, prompts, list(facts["target_true"]), batch_size=1)
    np.testing.assert_allclose(facts["p_true"], np.exp(lp.double().numpy()), rtol=1e-4)
    # Continuations are greedy and the same batched or one by one (left padding is masked).
    single = [greedy_continuations(tiny_gpt2, tiny_tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert list(facts["continuation"]) == single
    assert list(facts["is_correct"]) == [
        contains_target(c, t) for c, t in zip(single, facts["target_true"])
    ]
    assert (facts["erasure_eligible"] == (facts["p_true"] >= 0.02)).all()


def test_erasure_threshold_is_configurable(tiny_gpt2, tiny_tokenizer, counterfact_records):
    facts = filter_known_facts(
        tiny_gpt2, tiny_tokenizer, counterfact_records, max_new_tokens=2, erasure_min_prob=0.0
    )
    assert facts["erasure_eligible"].all()
    facts = filter_known_facts(
        tiny_gpt2, tiny_tokenizer, counterfact_records, max_new_tokens=2, erasure_min_prob=1.1
    )
    assert not facts["erasure_eligible"].any()
