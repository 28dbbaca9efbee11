"""The batched Causal Tracing engine: agreement with the per-cell baseline and its semantics."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from locedit.adapters import module_for
from locedit.hooks import forward_hooks
from locedit.scoring import encode_prompt_target, greedy_continuations
from locedit.layer_windows import window_bounds as window_layers
from locedit.tracing.batching import Patch, _fork_plan
from locedit.tracing.trace import (
    FactTracer,
    SubjectNotFoundError,
    estimate_noise_std,
    first_word,
    subject_embedding_std,
    trace_fact,
    zero_fact,
)

from locedit.tracing.reference import naive_trace

PROMPT, SUBJECT, TARGET = "The mother tongue of {} is", "Danielle Darrieux", "French"


@pytest.fixture(scope="module")
def tracer(tiny_gpt2, tiny_tokenizer):
    return FactTracer(
        tiny_gpt2,
        tiny_tokenizer,
        PROMPT,
        SUBJECT,
        TARGET,
        noise_std=0.5,
        samples=4,
        seed=3,
        row_budget=64,
    )


@pytest.mark.parametrize("kind", ["mlp", "attn", "hidden"])
@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_matches_naive_baseline(tiny_gpt2, tiny_tokenizer, tracer, kind, window):
    res = tracer.restore(kind, window)
    p_clean, p_noised, grid = naive_trace(
        tiny_gpt2,
        tiny_tokenizer,
        PROMPT,
        SUBJECT,
        TARGET,
        kind=kind,
        window=window,
        noise_std=0.5,
        samples=4,
        seed=3,
    )
    assert res.p_clean == pytest.approx(p_clean, rel=1e-5)
    assert res.p_noised == pytest.approx(p_noised, rel=1e-5)
    np.testing.assert_allclose(res.restored, grid, rtol=1e-5, atol=0)
    assert np.ptp(res.restored[res.subject_range[0] :]) > 0


def test_multi_token_target_matches_naive(tiny_gpt2, tiny_tokenizer):
    prompt, subject, target = "{} plays the", "Toko Yasuda", "guitar piano"
    _, tgt = encode_prompt_target(tiny_tokenizer, prompt.format(subject), target)
    assert len(tgt) > 1
    args = (tiny_gpt2, tiny_tokenizer, prompt, subject, target)
    kw = dict(kind="mlp", window=3, noise_std=0.5, samples=3, seed=0)
    res = trace_fact(*args, **kw, row_budget=8)
    _, _, grid = naive_trace(*args, **kw)
    np.testing.assert_allclose(res.restored, grid, rtol=1e-5, atol=0)


def test_row_budget_does_not_change_results(tracer):
    budget = tracer.row_budget
    try:
        tracer.row_budget = 1
        small = tracer.restore("mlp", 3).restored
        tracer.row_budget = 100_000
        big = tracer.restore("mlp", 3).restored
    finally:
        tracer.row_budget = budget
    np.testing.assert_allclose(small, big, rtol=1e-6)


@pytest.mark.parametrize(
    ("centre", "window", "n_layer", "expected"),
    [
        (0, 5, 6, (0, 3)),
        (5, 5, 6, (3, 6)),
        (3, 5, 28, (1, 6)),
        (4, 10, 28, (0, 9)),
        (5, 10, 28, (0, 10)),
        (27, 10, 28, (22, 28)),
        (7, 1, 8, (7, 8)),
        (7, 3, 8, (6, 8)),
    ],
)
def test_window_layers(centre, window, n_layer, expected):
    assert window_layers(centre, window, n_layer) == expected


def test_windows_clipped_at_layer_zero_fork_from_the_longest():
    """Centres 0-2 of a window-5 trace on 6 layers all start at layer 0: the longest window
    ([0, 5), centre 2) runs from its start, the others join as its copies at their own stop."""
    patches = [Patch(*window_layers(c, 5, 6), positions=(4,), offset=4) for c in range(6)]
    plan = _fork_plan(patches, list(range(6)))
    assert plan[2] == (0, None)
    assert plan[0] == (3, 2) and plan[1] == (4, 2)
    assert all(plan[c] == (patches[c].start, None) for c in (3, 4, 5))
    # another restored token or start pass never shares
    other = patches + [Patch(0, 3, positions=(5,), offset=4)]
    assert _fork_plan(other, list(range(7)))[6] == (0, None)


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        window_layers(3, 0, 8)


def test_tokens_before_subject_hold_noised_probability(tracer):
    res = tracer.restore("mlp", 3)
    s0 = res.subject_range[0]
    assert s0 > 0
    assert np.all(res.restored[:s0] == res.p_noised)
    assert res.restored.shape == (len(tracer.prompt_ids), 4)


def test_zero_noise_restores_nothing_and_changes_nothing(tiny_gpt2, tiny_tokenizer):
    res = trace_fact(
        tiny_gpt2,
        tiny_tokenizer,
        PROMPT,
        SUBJECT,
        TARGET,
        kind="hidden",
        window=1,
        noise_std=0.0,
        samples=2,
    )
    assert res.p_noised == pytest.approx(res.p_clean, rel=1e-6)
    np.testing.assert_allclose(res.restored, res.p_clean, rtol=1e-5)


def test_restoring_last_token_last_layer_state_gives_clean_probability(tiny_gpt2, tiny_tokenizer):
    """With a one-token target, the last layer's hidden state at the last token sets the logits."""
    prompt, subject, target = "The mother tongue of {} is", "Danielle Darrieux", "the"
    _, tgt = encode_prompt_target(tiny_tokenizer, prompt.format(subject), target)
    assert len(tgt) == 1
    res = trace_fact(
        tiny_gpt2,
        tiny_tokenizer,
        prompt,
        subject,
        target,
        kind="hidden",
        window=1,
        noise_std=1.0,
        samples=3,
    )
    assert abs(res.p_noised - res.p_clean) > 1e-3 * res.p_clean  # the noise matters
    assert res.restored[-1, -1] == pytest.approx(res.p_clean, rel=1e-5)
    assert res.restored[-1, 0] != pytest.approx(res.p_clean, rel=1e-4)  # earlier layers: not


def test_same_seed_same_noise_other_seed_other_noise(tiny_gpt2, tiny_tokenizer):
    kw = dict(kind="mlp", window=3, noise_std=0.5, samples=3, row_budget=8)
    a = trace_fact(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, seed=1, **kw)
    b = trace_fact(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, seed=1, **kw)
    c = trace_fact(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, seed=2, **kw)
    assert np.array_equal(a.restored, b.restored) and a.p_noised == b.p_noised
    assert a.p_noised != c.p_noised
    assert a.noise_std == 0.5 and a.samples == 3


def test_zeroing_matches_hooked_forward(tiny_gpt2, tiny_tokenizer):
    res = zero_fact(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, window=3, row_budget=2)
    p_ids, t_ids = encode_prompt_target(tiny_tokenizer, PROMPT.format(SUBJECT), TARGET)
    ids = torch.tensor([p_ids + t_ids[:-1]])
    s0, s1 = res.subject_range

    def zero(module, inputs, output):
        output = output.clone()
        output[:, s0:s1] = 0
        return output

    for centre in range(4):
        a, b = window_layers(centre, 3, 4)
        with forward_hooks([(module_for(tiny_gpt2, "mlp", j), zero) for j in range(a, b)]):
            logits = tiny_gpt2(input_ids=ids).logits
        logp = torch.log_softmax(logits[0], -1)
        p = float(sum(logp[len(p_ids) - 1 + k, t] for k, t in enumerate(t_ids)).exp())
        assert res.p_zeroed[centre] == pytest.approx(p, rel=1e-5)
    assert np.all(res.p_zeroed != res.p_clean)
    np.testing.assert_allclose(res.effect, (res.p_clean - res.p_zeroed) / res.p_clean)


def test_o_noise_is_a_deterministic_word(tracer):
    word = tracer.o_noise(6)
    assert word and word == word.strip() and " " not in word
    assert tracer.o_noise(6) == word


def test_o_noise_without_noise_is_the_greedy_first_word(tiny_gpt2, tiny_tokenizer):
    t = FactTracer(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, noise_std=0.0, samples=2)
    cont = greedy_continuations(
        tiny_gpt2, tiny_tokenizer, [PROMPT.format(SUBJECT)], max_new_tokens=8
    )[0]
    expected = first_word(cont)
    if expected:  # a random model may emit punctuation first; then the fallback applies
        assert t.o_noise(8) == expected


def test_first_word():
    assert first_word(" New York City") == "New"
    assert first_word("Paris, France") == "Paris"
    assert first_word(" \n.,") == ""


def test_subject_not_found(tiny_gpt2, tiny_tokenizer):
    with pytest.raises(SubjectNotFoundError):
        FactTracer(
            tiny_gpt2, tiny_tokenizer, "The mother tongue of {} is", "", TARGET, noise_std=0.1
        )


def test_unknown_kind(tracer):
    with pytest.raises(ValueError, match="kind"):
        tracer.restore("residual", 3)


def test_noise_level_is_multiple_of_subject_embedding_std(tiny_gpt2, tiny_tokenizer):
    facts = [(PROMPT, SUBJECT), ("{} produces music", "Toko Yasuda"), ("{} is", "")]
    std, n_tokens, missing = subject_embedding_std(tiny_gpt2, tiny_tokenizer, facts)
    assert missing == [2]
    rows = []
    for prompt, subject in facts[:2]:
        ids = tiny_tokenizer(prompt.format(subject))["input_ids"]
        text_start = prompt.index("{}")
        offs = tiny_tokenizer(prompt.format(subject), return_offsets_mapping=True)["offset_mapping"]
        sel = [
            i for i, (a, b) in enumerate(offs) if a < text_start + len(subject) and b > text_start
        ]
        rows.append(tiny_gpt2.transformer.wte.weight[[ids[i] for i in sel]])
    emb = torch.cat(rows)
    assert n_tokens == emb.shape[0]
    assert std == pytest.approx(float(emb.double().std()), rel=1e-9)
    assert estimate_noise_std(tiny_gpt2, tiny_tokenizer, facts, 3.0) == pytest.approx(3 * std)


def test_derived_noise_level_is_recorded(tiny_gpt2, tiny_tokenizer):
    res = trace_fact(tiny_gpt2, tiny_tokenizer, PROMPT, SUBJECT, TARGET, noise_std=None, samples=2)
    assert res.noise_std == pytest.approx(
        estimate_noise_std(tiny_gpt2, tiny_tokenizer, [(PROMPT, SUBJECT)], 3.0)
    )


@pytest.mark.parametrize("kind", ["mlp", "hidden"])
def test_first_window_layer_shortcut_is_exact(tracer, kind):
    """Starting above the window's first layer (its output derived) = computing that layer."""
    fast = tracer.restore(kind, 3).restored
    derive = tracer._first_layer_state
    try:
        tracer._first_layer_state = lambda *a: None
        slow = tracer.restore(kind, 3).restored
    finally:
        tracer._first_layer_state = derive
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=0)


def test_additivity_check_rejects_non_residual_blocks(tracer):
    from types import SimpleNamespace

    from locedit.tracing.trace import _blocks_are_additive

    assert _blocks_are_additive(tracer.clean)
    c = tracer.clean
    post_norm = [torch.nn.functional.layer_norm(o, o.shape[-1:]) for o in c.outputs["block"]]
    fake = SimpleNamespace(block_in=c.block_in, outputs={**c.outputs, "block": post_norm})
    assert not _blocks_are_additive(fake)
