"""Constrained finetuning: stays within ε of the original weights, edits only its window,
raises p(y) (lowers it for erasure), and is undone bit-exactly."""

from __future__ import annotations

import pytest
import torch

from locedit.adapters import edit_weight, module_for
from locedit.editing.ft import apply_ft
from locedit.layer_windows import edit_window as window_layers
from locedit.editing.types import EditRequest, restore
from locedit.scoring import target_logprobs

HP = {"lr": 5e-2, "num_steps": 10, "norm_constraint": 2e-2}


def _request(records, **kw):
    rw = records[0]["requested_rewrite"]
    kw.setdefault("target", rw["target_new"]["str"])
    return EditRequest(case_id=0, prompt=rw["prompt"], subject=rw["subject"], **kw)


def _logp(model, tok, req):
    return target_logprobs(model, tok, [req.prompt.format(req.subject)], [req.target])[0].item()


def _state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_window_layers_clip_like_tracing():
    assert window_layers(0, 5, 6) == [0, 1, 2]
    assert window_layers(3, 5, 6) == [1, 2, 3, 4, 5]
    assert window_layers(5, 5, 6) == [3, 4, 5]
    assert window_layers(4, 1, 6) == [4]
    assert window_layers(5, 10, 12) == list(range(0, 10))
    with pytest.raises(ValueError):
        window_layers(6, 1, 6)


@pytest.mark.parametrize("window", [1, 5])
def test_ft_stays_within_eps_and_window(tiny_gpt2, tiny_tokenizer, counterfact_records, window):
    model, tok = tiny_gpt2, tiny_tokenizer
    before = _state(model)
    req = _request(counterfact_records)
    p0 = _logp(model, tok, req)
    snap, info = apply_ft(model, tok, req, 1, {**HP, "window": window})
    try:
        assert info["layers"] == window_layers(1, window, 4)
        assert _logp(model, tok, req) > p0 + 0.1  # the edit pushed p(y) up
        edited = {
            name
            for name, p in model.named_parameters()
            if not torch.equal(p, before[name])
        }
        allowed = set(snap.weights)
        assert edited and edited <= allowed
        assert len({n for n in allowed if n.endswith("weight")}) == len(info["layers"])
        for name, p in model.named_parameters():
            assert (p - before[name]).abs().max().item() <= HP["norm_constraint"] * (1 + 1e-5)
        assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        restore(model, snap)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name  # bit-exact undo


def test_ft_projection_binds(tiny_gpt2, tiny_tokenizer, counterfact_records):
    """With a tiny ε the clamp is active: some entries sit exactly on the ball's surface."""
    model, tok = tiny_gpt2, tiny_tokenizer
    w0 = edit_weight(model, 2).detach().clone()
    snap, _ = apply_ft(model, tok, _request(counterfact_records), 2, {**HP, "norm_constraint": 1e-4})
    try:
        diff = (edit_weight(model, 2) - w0).abs()
        assert diff.max().item() <= 1e-4 * (1 + 1e-5)
        assert (diff > 0.99e-4).sum().item() > 0
    finally:
        restore(model, snap)


def _likely_word(model, tok, prompt: str) -> str:
    """The most likely next word-initial token: a target whose p is not vanishingly small."""
    ids = torch.tensor([tok(prompt)["input_ids"]])
    logits = model(input_ids=ids).logits[0, -1]
    for tid in logits.argsort(descending=True).tolist():
        word = tok.decode([tid])
        if word.startswith(" ") and word.strip().isalpha():
            return word.strip()
    raise AssertionError("no word token")


def test_ft_erasure_lowers_probability(tiny_gpt2, tiny_tokenizer, counterfact_records):
    model, tok = tiny_gpt2, tiny_tokenizer
    before = _state(model)
    rw = counterfact_records[0]["requested_rewrite"]
    # A random model gives CounterFact objects p ≈ e^-26, where the gradient of p vanishes.
    word = _likely_word(model, tok, rw["prompt"].format(rw["subject"]))
    erase = _request(counterfact_records, target=word, minimize=True)
    p0 = _logp(model, tok, erase)
    snap, info = apply_ft(model, tok, erase, 3, {**HP, "stop_loss": 0.0})
    try:
        assert _logp(model, tok, erase) < p0 - 0.1
        assert info["steps"] == HP["num_steps"]
    finally:
        restore(model, snap)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_ft_fact_forcing_trains_on_noised_subject(tiny_gpt2, tiny_tokenizer, counterfact_records):
    model, tok = tiny_gpt2, tiny_tokenizer
    noise = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    req = _request(counterfact_records, noise=noise)
    before = _state(model)
    snap, info = apply_ft(model, tok, req, 1, {**HP, "num_noise_samples": 3})
    try:
        assert info["steps"] > 0
        bias = module_for(model, "mlp_out", 1).bias
        name = next(n for n, p in model.named_parameters() if p is bias)
        assert (bias - before[name]).abs().max().item() <= HP["norm_constraint"] * (1 + 1e-5)
    finally:
        restore(model, snap)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_unknown_hparam_is_an_error(tiny_gpt2, tiny_tokenizer, counterfact_records):
    with pytest.raises(ValueError, match=r"unknown editing\.methods\.ft keys \[.lrr.\]"):
        apply_ft(tiny_gpt2, tiny_tokenizer, _request(counterfact_records), 1, {"lrr": 1.0})


def test_ft_half_precision_trains_float32_masters(tiny_tokenizer, counterfact_records):
    """A bfloat16 model: the edit still moves p(y), stays (up to rounding) in the ball, undoes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=len(tiny_tokenizer))
    model = GPT2LMHeadModel(cfg).eval().to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    before = _state(model)
    req = _request(counterfact_records)
    p0 = _logp(model, tiny_tokenizer, req)
    snap, info = apply_ft(model, tiny_tokenizer, req, 0, HP)
    try:
        assert info["steps"] > 0 and _logp(model, tiny_tokenizer, req) > p0
        w, w0 = edit_weight(model, 0).float(), before[next(iter(snap.weights))].float()
        assert (w - w0).abs().max().item() <= HP["norm_constraint"] + 2 * w0.abs().max().item() * 2**-8
        assert edit_weight(model, 0).dtype == torch.bfloat16
    finally:
        restore(model, snap)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_ft_failure_restores_weights(tiny_gpt2, tiny_tokenizer, counterfact_records, monkeypatch):
    before = _state(tiny_gpt2)
    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def failing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        apply_ft(tiny_gpt2, tiny_tokenizer, _request(counterfact_records), 1, HP)
    assert all(torch.equal(p, before[n]) for n, p in tiny_gpt2.named_parameters())
    assert all(not p.requires_grad for p in tiny_gpt2.parameters())
