"""Tracing beyond the paper's settings (locedit.registry.kinds): symmetric token replacement,
noising and the log-probability / logit-difference metrics, through the workflow's entry point,
against an independent per-cell reference (tests/reference_tracer.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from locedit.registry.kinds import TRACE_KINDS
from locedit.tracing.corruption import str_partner
from locedit.tracing.tables import trace_dataset
from tests.reference_tracer import reference_patch

FACT = {"case_id": 7, "prompt": "The mother tongue of {} is", "subject": "Toko Yasuda",
        "relation_id": "P103", "target_true": "Japanese", "target_new": "French"}
#: the dataset a partner is drawn from (3 tokens in this prompt: Toko Yasuda, Edwin of
#: Northumbria, Apple; 2: Danielle Darrieux)
POOL = [FACT] + [
    {"case_id": 10 + i, "prompt": "The mother tongue of {} is", "subject": s, "relation_id": rel,
     "target_true": obj, "target_new": "Dutch"}
    for i, (s, rel, obj) in enumerate([
        ("Edwin of Northumbria", "P103", "English"), ("Apple", "P176", "Apple"),
        ("Danielle Darrieux", "P103", "French"), ("Toko Yasuda", "P103", "Japanese"),
    ])
]  # fmt: skip
KINDS = ["mlp_str", "attn_str_noising", "hidden_str_logprob", "mlp_noising", "hidden_noising_logit_diff",
         "mlp_logit_diff", "mlp_str_noising_logit_diff", "attn_logprob"]  # fmt: skip


def _grid(grid, kind, window):
    rows = grid[(grid.kind == kind) & (grid.window == window)]
    return rows, rows.pivot(index="token_index", columns="layer", values="p_restored").to_numpy()


@pytest.fixture(scope="module")
def tiny_llama(tiny_tokenizer):
    """A random 3-layer Llama (rotary positions, grouped key/value heads, SwiGLU, RMSNorm)."""
    torch.manual_seed(0)
    cfg = T.LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=64, vocab_size=len(tiny_tokenizer), max_position_embeddings=128)
    return T.LlamaForCausalLM(cfg).eval().requires_grad_(False)


@pytest.mark.parametrize("arch,window", [("gpt2", 1), ("gpt2", 3), ("llama", 3)])
def test_every_setting_agrees_with_an_independent_reference(tiny_gpt2, tiny_llama, tiny_tokenizer, arch, window):
    model = tiny_gpt2 if arch == "gpt2" else tiny_llama
    runs = [{"kind": k, "window": window} for k in KINDS]
    grid, facts = trace_dataset(model, tiny_tokenizer, [FACT], runs, noise_std=0.5, samples=3,
                                seed=4, row_budget=16, o_noise_max_tokens=2, pool=POOL)
    partner = next(r for r in POOL if r["case_id"] == int(facts.loc[0, "str_partner"]))
    for kind in KINDS:
        spec = TRACE_KINDS[kind]
        clean, corrupt, want = reference_patch(
            model, tiny_tokenizer, FACT["prompt"], FACT["subject"], FACT["target_true"],
            kind=spec.component if spec.component != "block" else "hidden", width=window,
            direction=spec.direction, metric=spec.metric, noise_std=0.5, samples=3, config_seed=4,
            case_id=7, partner=partner["subject"] if spec.corruption == "str" else None,
            contrast=FACT["target_new"] if spec.corruption == "gaussian" else None)
        rows, ours = _grid(grid, kind, window)
        # relative to the grid's scale: the random model gives the target p ~ 1e-17
        scale = np.abs(want).max()
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-7 * scale, err_msg=kind)
        assert rows["score_clean"].iloc[0] == pytest.approx(clean, rel=1e-5, abs=1e-7 * scale)
        assert rows["score_corrupt"].iloc[0] == pytest.approx(corrupt, rel=1e-5, abs=1e-7 * scale)


def test_partner_rules(tiny_tokenizer):
    """Another subject, the same token span in this prompt, another answer, the same relation
    first, seeded per fact; none where nothing fits."""
    partner, ids = str_partner(tiny_tokenizer, FACT, POOL, seed=4)
    assert partner["subject"] == "Edwin of Northumbria"  # the only one of the same relation
    own = tiny_tokenizer(FACT["prompt"].format(FACT["subject"]))["input_ids"]
    text = tiny_tokenizer(FACT["prompt"].format(partner["subject"]))["input_ids"]
    assert len(ids) == 3 and text[:4] + ids + text[7:] == text and text[:4] == own[:4] and ids != own[4:7]
    assert str_partner(tiny_tokenizer, FACT, POOL, seed=4) == (partner, ids)  # deterministic
    other = str_partner(tiny_tokenizer, FACT, [FACT, POOL[2], POOL[3]], seed=4)
    assert other[0]["subject"] == "Apple"  # another relation when none of its own fits
    same_answer = {**POOL[1], "target_true": "Japanese"}
    assert str_partner(tiny_tokenizer, FACT, [FACT, same_answer, POOL[3], POOL[4]], seed=4) is None


def test_a_fact_without_a_partner_is_named_and_kept(tiny_gpt2, tiny_tokenizer, caplog):
    runs = [{"kind": "mlp", "window": 1}, {"kind": "mlp_str", "window": 1}]
    grid, facts = trace_dataset(tiny_gpt2, tiny_tokenizer, [FACT], runs, noise_std=0.5, samples=2,
                                seed=0, row_budget=16, o_noise_max_tokens=2, pool=[FACT])
    assert set(grid.kind) == {"mlp"} and facts.loc[0, "status"] == "ok"
    assert "case_id 7: no partner subject" in caplog.text


def test_one_fact_trace_with_a_partner_equals_the_workflows(tiny_gpt2, tiny_tokenizer):
    """trace_fact (the one-fact API's) with the partner the workflow drew gives the workflow's
    grid; a partner of another token length is named."""
    from locedit.tracing.trace import trace_fact

    grid, facts = trace_dataset(tiny_gpt2, tiny_tokenizer, [FACT], [{"kind": "mlp_str_logprob", "window": 3}],
                                noise_std=0.5, samples=3, seed=4, row_budget=16, o_noise_max_tokens=2, pool=POOL)
    partner = next(r["subject"] for r in POOL if r["case_id"] == int(facts.loc[0, "str_partner"]))
    res = trace_fact(tiny_gpt2, tiny_tokenizer, FACT["prompt"], FACT["subject"], FACT["target_true"],
                     kind="mlp_str_logprob", window=3, noise_std=None, partner=partner)
    np.testing.assert_array_equal(res.restored, _grid(grid, "mlp_str_logprob", 3)[1])
    with pytest.raises(ValueError, match="does not replace 'Toko Yasuda' token for token"):
        trace_fact(tiny_gpt2, tiny_tokenizer, FACT["prompt"], FACT["subject"], FACT["target_true"],
                   kind="mlp_str", window=3, noise_std=None, partner="Danielle Darrieux")
    with pytest.raises(ValueError, match="name a partner subject"):
        trace_fact(tiny_gpt2, tiny_tokenizer, FACT["prompt"], FACT["subject"], FACT["target_true"],
                   kind="mlp_str", window=3, noise_std=None)


def test_cli_names_a_missing_partner_before_any_load(monkeypatch):
    from click.testing import CliRunner

    from locedit import api
    from locedit.cli import main

    monkeypatch.setattr(api, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    res = CliRunner().invoke(main, ["trace", "--model", "/no/such/dir", "--prompt", "The mother tongue of {} is",
                                    "--subject", "Toko Yasuda", "--target", "Japanese", "--kind", "mlp_str"])
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert line == "Error: --partner: --kind mlp_str replaces the subject: name the subject put in its place"
