"""ROME: a rank-one update that maps the prompt's key to v*, undone bit-exactly; FF noise placement."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from locedit.adapters import edit_weight, is_conv1d, module_for
from locedit.editing.compute_kv import fill_template, module_io_at_lookup, subject_noise_ctx
from locedit.editing.covariance import CovarianceStore
from locedit.editing.hparams import ROMEHparams, resolve
from locedit.editing.rome import apply_r_rome, apply_rome, rome_update
from locedit.editing.types import EditRequest, restore
from locedit.hooks import forward_hooks
from locedit.data.records import subject_token_range

TEMPLATES = ["{}", "The team won the game. {}", "Is it true that. {}", "She said. {}"]
# A random tiny model's MLP outputs are tiny, so ROME's weight decay (relative to ‖v_init‖²) would
# pin delta at zero; these settings let v* move so the edit is visible.
INIT = 0.2
HP = {"v_weight_decay": 0.0, "clamp_norm_factor": 100.0, "v_num_grad_steps": 15, "early_stop_loss": None}


def _model(tok, arch: str = "gpt2", n_layer: int = 4):
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(
            n_layer=n_layer, n_embd=32, n_head=4, n_positions=128, vocab_size=len(tok), initializer_range=INIT,
            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            num_hidden_layers=n_layer, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
            bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
        )  # fmt: skip
        model = LlamaForCausalLM(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _stats(model, seed: int = 0) -> CovarianceStore:
    """A random SPD C per layer, of the down-projection's input width."""
    from locedit.adapters import n_layers

    w = edit_weight(model, 0)
    d = w.shape[0] if is_conv1d(model) else w.shape[1]  # d_mlp
    g = torch.Generator().manual_seed(seed)
    mats = {}
    for layer in range(n_layers(model)):
        a = torch.randn(d, 4 * d, generator=g)
        mats[layer] = a @ a.T / (4 * d) + 0.1 * torch.eye(d)
    return CovarianceStore.from_matrices(mats)


def _request(records, i: int = 0, **kw) -> EditRequest:
    rw = records[i]["requested_rewrite"]
    return EditRequest(int(records[i]["case_id"]), rw["prompt"], rw["subject"], rw["target_new"]["str"], **kw)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_update_is_rank_one_and_maps_prompt_key_to_v_star(tiny_tokenizer, counterfact_records, arch):
    tok = tiny_tokenizer
    model = _model(tok, arch)
    stats = _stats(model)
    req = _request(counterfact_records)
    hp = resolve(ROMEHparams, HP, "rome")
    vectors, _ = rome_update(model, tok, req, 1, hp, stats, TEMPLATES)
    w0 = edit_weight(model, 1).detach().clone()
    snap, diag = apply_rome(model, tok, req, 1, HP, stats, TEMPLATES)
    delta = (edit_weight(model, 1) - w0).double()
    # Rank one up to the float32 rounding of W + ΔW.
    sv = torch.linalg.svdvals(delta)
    assert sv[0] > 0 and (sv[1:] < 1e-4 * sv[0]).all()
    assert (delta != 0).any()
    # Ŵ k_prompt = v*: the edited down-projection outputs v* at the bare prompt's subject token.
    _, out = module_io_at_lookup(model, tok, req, [req.prompt], 1)
    assert torch.allclose(out[0], vectors["v_star"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(vectors["out_prompt"], vectors["v_star"], atol=1e-3)
    # u ∝ C⁻¹ k* (the left vector).
    c_inv_k = torch.linalg.solve(stats.mom2(1).double(), vectors["k_star"].double())
    assert torch.allclose(vectors["u"].double(), c_inv_k / c_inv_k.norm(), atol=1e-5)
    assert diag["opt_seconds"] > 0 and diag["update_seconds"] > 0
    restore(model, snap)
    assert torch.equal(edit_weight(model, 1), w0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_r_rome_maps_the_averaged_key_to_v_star(tiny_tokenizer, counterfact_records, arch):
    """r-ROME (Gupta et al. 2024): the update uses k* on both sides, so Ŵ k* = v* exactly, where
    ROME's maps the bare prompt's key; u and v* are ROME's (same settings, same optimisation)."""
    tok = tiny_tokenizer
    model = _model(tok, arch)
    stats = _stats(model)
    req = _request(counterfact_records)
    hp = resolve(ROMEHparams, HP, "rome")
    ref, _ = rome_update(model, tok, req, 1, hp, stats, TEMPLATES)
    vec, _ = rome_update(model, tok, req, 1, hp, stats, TEMPLATES, consistent_key=True)
    assert torch.equal(vec["u"], ref["u"]) and torch.equal(vec["v_star"], ref["v_star"])
    assert torch.equal(vec["k_prompt"], ref["k_star"]) and not torch.equal(ref["k_prompt"], ref["k_star"])
    module = module_for(model, "mlp_out", 1)
    w0 = edit_weight(model, 1).detach().clone()
    before = module(ref["k_star"][None])[0]
    snap, _ = apply_r_rome(model, tok, req, 1, HP, stats, TEMPLATES)
    after = module(ref["k_star"][None])[0]
    assert torch.allclose(after, ref["v_star"], atol=1e-4, rtol=1e-4)  # Ŵ k* = v*
    assert not torch.allclose(before, ref["v_star"], atol=1e-3)
    restore(model, snap)
    assert torch.equal(edit_weight(model, 1), w0)
    # ROME's update leaves Ŵ k* ≠ v* (it maps the bare prompt's key instead)
    snap, _ = apply_rome(model, tok, req, 1, HP, stats, TEMPLATES)
    assert not torch.allclose(module(ref["k_star"][None])[0], ref["v_star"], atol=1e-3)
    restore(model, snap)


def test_orientation_matches_linear_and_conv1d(tiny_tokenizer, counterfact_records):
    """The update lands as right ⊗ u in Linear layout ([d_model, d_mlp]), transposed for Conv1D."""
    for arch in ("gpt2", "llama"):
        model = _model(tiny_tokenizer, arch)
        stats = _stats(model)
        req = _request(counterfact_records)
        hp = resolve(ROMEHparams, HP, "rome")
        vec, _ = rome_update(model, tiny_tokenizer, req, 2, hp, stats, TEMPLATES)
        w0 = edit_weight(model, 2).detach().clone()
        apply_rome(model, tiny_tokenizer, req, 2, HP, stats, TEMPLATES)
        delta = edit_weight(model, 2) - w0
        expect = torch.outer(vec["right"], vec["u"])
        assert torch.allclose(delta.T if is_conv1d(model) else delta, expect, atol=1e-6)


def test_restore_is_bit_exact_and_grads_stay_off(tiny_tokenizer, counterfact_records):
    model = _model(tiny_tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    snap, _ = apply_rome(model, tiny_tokenizer, _request(counterfact_records), 3, HP, _stats(model), TEMPLATES)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(snap.weights) == 1
    restore(model, snap)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_value_optimisation_raises_target_and_erasure_lowers_it(tiny_tokenizer, counterfact_records):
    """v* pushes p(target) up over the context prompts; with ``minimize`` it pushes it down.

    (Edit efficacy end to end is tested on the trained toy: tests/workflow/test_toy_science.py;
    a random model's logits barely react to one position's MLP output.)
    """
    model = _model(tiny_tokenizer)
    stats = _stats(model)
    req = _request(counterfact_records)
    snap, diag = apply_rome(model, tiny_tokenizer, req, 1, HP, stats, TEMPLATES)
    assert diag["p_target"] > 1.1 * diag["p_target_init"]
    restore(model, snap)
    erase = _request(counterfact_records, minimize=True)
    # p(target) is ~1e-3 here, so the erasure loss p has small gradients: no KL to compete.
    snap, diag = apply_rome(model, tiny_tokenizer, erase, 1, {**HP, "kl_factor": 0.0}, stats, TEMPLATES)
    assert diag["p_target"] < 0.9 * diag["p_target_init"]
    restore(model, snap)


def test_deterministic(tiny_tokenizer, counterfact_records):
    model = _model(tiny_tokenizer)
    stats = _stats(model)
    req = _request(counterfact_records, 2)
    snap, d1 = apply_rome(model, tiny_tokenizer, req, 1, HP, stats, TEMPLATES)
    w1 = edit_weight(model, 1).detach().clone()
    restore(model, snap)
    apply_rome(model, tiny_tokenizer, req, 1, HP, stats, TEMPLATES)
    assert torch.equal(w1, edit_weight(model, 1))


def test_fact_forcing_noises_each_prompts_own_subject_span(tiny_tokenizer, counterfact_records):
    """Noise lands on the subject tokens of every row, wherever the context prefix put them."""
    tok = tiny_tokenizer
    model = _model(tok)
    req = _request(counterfact_records, noise=torch.ones(12, 32))
    templates = [fill_template(c, req.prompt) for c in TEMPLATES] + ["{} is a"]
    rows = [tok(t.format(req.subject))["input_ids"] for t in templates]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    seen = {}

    def grab(module, inputs, output):
        seen.setdefault("emb", []).append(output.clone())

    with forward_hooks([(module_for(model, "embed"), grab)]):
        model(input_ids=ids)
    with subject_noise_ctx(model, tok, req, templates):  # grab runs after the noise hook
        with forward_hooks([(module_for(model, "embed"), grab)]):
            model(input_ids=ids)
    diff = (seen["emb"][1] - seen["emb"][0]).abs().sum(-1) > 0  # [rows, pos]
    for i, t in enumerate(templates):
        s, e = subject_token_range(tok, t, req.subject)
        expect = torch.zeros(width, dtype=torch.bool)
        expect[s:e] = True
        assert torch.equal(diff[i], expect), t


def test_fact_forcing_changes_the_edit(tiny_tokenizer, counterfact_records):
    model = _model(tiny_tokenizer)
    stats = _stats(model)
    clean = _request(counterfact_records)
    noised = _request(counterfact_records, noise=torch.randn(12, 32, generator=torch.Generator().manual_seed(1)))
    snap, _ = apply_rome(model, tiny_tokenizer, clean, 1, HP, stats, TEMPLATES)
    w_clean = edit_weight(model, 1).detach().clone()
    restore(model, snap)
    snap, _ = apply_rome(model, tiny_tokenizer, noised, 1, HP, stats, TEMPLATES)
    assert not torch.allclose(w_clean, edit_weight(model, 1))
    restore(model, snap)


def test_unknown_hparam_is_named(tiny_tokenizer, counterfact_records):
    model = _model(tiny_tokenizer)
    with pytest.raises(ValueError, match="editing.methods.rome.*v_lrr"):
        apply_rome(model, tiny_tokenizer, _request(counterfact_records), 1, {"v_lrr": 1}, _stats(model), TEMPLATES)


def test_context_templates_are_seeded_and_well_formed(tiny_tokenizer):
    from locedit.editing.compute_kv import generate_context_templates

    model = _model(tiny_tokenizer)
    kw = dict(top_k=5, rome_lengths=[[5, 3], [8, 2]], memit_prompts=["The", "I"], memit_lengths=[[6, 4]])
    a = generate_context_templates(model, tiny_tokenizer, seed=3, **kw)
    assert a == generate_context_templates(model, tiny_tokenizer, seed=3, **kw)
    assert a != generate_context_templates(model, tiny_tokenizer, seed=4, **kw)
    assert len(a["rome"]) == 1 + 3 + 2 and len(a["memit"]) == 1 + 2 * 2
    for t in a["rome"] + a["memit"]:
        assert t.count("{}") == 1 and "{" not in t.replace("{}", "") and "}" not in t.replace("{}", "")
        fill_template(t, "The mother tongue of {} is").format("X")  # usable as a prompt template
    assert a["rome"][0] == a["memit"][0] == "{}"
    assert all(t.startswith(("The", "I")) for t in a["memit"][1:])
