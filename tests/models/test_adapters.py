"""Every registered architecture: paths resolve on a tiny random model and tracing runs on it.

Models are built from their ``transformers`` config classes (no download). The batched tracing
engine replays blocks with recorded arguments, so agreement with the one-pass-per-cell baseline
is checked for every architecture and kind.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from torch import nn

from locedit import adapters
from locedit.adapters import (
    ADAPTERS,
    GLOBAL_COMPONENTS,
    LAYER_COMPONENTS,
    d_model,
    edit_weight,
    get_adapter,
    is_conv1d,
    module_for,
    n_layers,
    untuple,
)
from locedit.tracing.passes import SuffixArgsCache, cached_forward, record_suffix_args
from locedit.tracing.reference import naive_trace
from locedit.tracing.trace import FactTracer

REPO = Path(__file__).resolve().parents[2]

N_LAYER, WIDTH = 3, 32


def _configs(vocab: int) -> dict[str, T.PretrainedConfig]:
    small = dict(
        num_hidden_layers=N_LAYER,
        hidden_size=WIDTH,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=vocab,
        max_position_embeddings=128,
    )
    return {
        "GPT2LMHeadModel": T.GPT2Config(
            n_layer=N_LAYER, n_embd=WIDTH, n_head=4, vocab_size=vocab, n_positions=128
        ),
        "GPTJForCausalLM": T.GPTJConfig(
            n_layer=N_LAYER, n_embd=WIDTH, n_head=4, rotary_dim=4, vocab_size=vocab, n_positions=128
        ),
        "GPTNeoXForCausalLM": T.GPTNeoXConfig(**small),
        "LlamaForCausalLM": T.LlamaConfig(**small, num_key_value_heads=2),
        "MistralForCausalLM": T.MistralConfig(**small, num_key_value_heads=2),
        "Qwen2ForCausalLM": T.Qwen2Config(**small, num_key_value_heads=2),
    }


@pytest.fixture(scope="module")
def models(tiny_tokenizer) -> dict[str, nn.Module]:
    out = {}
    for arch, cfg in _configs(len(tiny_tokenizer)).items():
        torch.manual_seed(0)
        model = T.AutoModelForCausalLM.from_config(cfg).eval()
        model.requires_grad_(False)
        out[arch] = model
    return out


def test_every_registered_architecture_is_tested(tiny_tokenizer):
    assert set(_configs(len(tiny_tokenizer))) == set(ADAPTERS)


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
def test_paths_resolve_and_shapes(models, arch):
    model = models[arch]
    assert type(model).__name__ == arch  # from_config models are keyed by class name
    assert n_layers(model) == N_LAYER and d_model(model) == WIDTH
    for comp in GLOBAL_COMPONENTS:
        assert isinstance(module_for(model, comp), nn.Module)
    for layer in range(N_LAYER):
        for comp in LAYER_COMPONENTS:
            assert isinstance(module_for(model, comp, layer), nn.Module)
    assert module_for(model, "embed").weight.shape[1] == WIDTH
    assert module_for(model, "lm_head").weight.shape[1] == WIDTH
    w = edit_weight(model, 1)
    # Conv1D stores [d_in = d_mlp, d_out = d_model]; nn.Linear stores [d_out, d_in].
    assert (w.shape[1] if is_conv1d(model) else w.shape[0]) == WIDTH
    assert (w.shape[0] if is_conv1d(model) else w.shape[1]) != WIDTH  # d_mlp differs here


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
def test_module_outputs_are_residual_contributions(models, arch):
    """block/mlp/attn outputs are [batch, pos, d_model], and the final norm + head reproduce logits."""
    model = models[arch]
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    seen = {}

    def grab(name):
        return lambda m, i, o: seen.__setitem__(name, untuple(o))

    hooks = [
        module_for(model, c, 2).register_forward_hook(grab(c)) for c in ("block", "mlp", "attn")
    ]
    try:
        logits = model(input_ids=ids, use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
    for comp in ("block", "mlp", "attn"):
        assert seen[comp].shape == (1, 5, WIDTH), comp
    again = module_for(model, "lm_head")(module_for(model, "final_norm")(seen["block"]))
    torch.testing.assert_close(again, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
def test_batched_tracing_matches_naive(models, tiny_tokenizer, arch):
    model = models[arch]
    args = (model, tiny_tokenizer, "The mother tongue of {} is", "Danielle Darrieux", "French")
    tracer = FactTracer(*args, noise_std=1.0, samples=3, seed=1, row_budget=7)
    assert tracer.additive_blocks  # every registered block is residual: x + attn + mlp
    for kind in ("mlp", "attn", "hidden"):
        res = tracer.restore(kind, 2)
        p_clean, p_noised, grid = naive_trace(
            *args, kind=kind, window=2, noise_std=1.0, samples=3, seed=1
        )
        assert res.p_clean == pytest.approx(p_clean, rel=1e-5)
        assert res.p_noised == pytest.approx(p_noised, rel=1e-5)
        np.testing.assert_allclose(res.restored, grid, rtol=1e-5, atol=0)
        s0 = res.subject_range[0]
        assert np.ptp(res.restored[s0:]) > 0, f"{kind}: restorations changed nothing"


def _same(a, b) -> bool:
    """Recursive equality of recorded block arguments (tensors by value, others by type)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b)


@pytest.mark.parametrize("arch", sorted(ADAPTERS))
def test_block_arguments_depend_on_positions_not_tokens(models, arch):
    """What lets one SuffixArgsCache serve every fact of a job: two inputs of equal length get
    the same recorded block arguments at every layer and offset."""
    model = models[arch]
    ids_a = torch.tensor([[5, 17, 42, 9, 3, 11]])
    ids_b = torch.tensor([[8, 2, 30, 41, 7, 19]])
    for offset in (0, 2, 5):
        args = [
            record_suffix_args(model, ids, cached_forward(model, ids), offset)
            for ids in (ids_a, ids_b)
        ]
        for j in range(N_LAYER):
            assert _same(args[0].args[j], args[1].args[j]), (offset, j)
            assert _same(args[0].kwargs[j], args[1].kwargs[j]), (offset, j)


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "LlamaForCausalLM"])
def test_shared_argument_cache_changes_nothing(models, tiny_tokenizer, arch):
    model = models[arch]
    facts = [  # two facts of equal token length, traced after each other with one cache
        ("The mother tongue of {} is", "Danielle Darrieux", "French"),
        ("The mother tongue of {} is", "Danielle Darrieux", "Italian"),
    ]
    kw = dict(noise_std=1.0, samples=3, seed=1)
    shared = SuffixArgsCache(model)
    recorded = []
    for fact in facts:
        alone = FactTracer(model, tiny_tokenizer, *fact, **kw).restore("mlp", 2)
        cached = FactTracer(model, tiny_tokenizer, *fact, arg_cache=shared, **kw).restore("mlp", 2)
        np.testing.assert_array_equal(cached.restored, alone.restored)
        recorded.append(len(shared._args))
    assert recorded[0] > 0 and recorded[1] == recorded[0]  # the second fact recorded nothing
    with pytest.raises(ValueError, match="another model"):
        FactTracer(models["Qwen2ForCausalLM"], tiny_tokenizer, *facts[0], arg_cache=shared, **kw)


def test_unsupported_architecture_lists_supported():
    class Tiny(nn.Module):
        config = T.PretrainedConfig()

    with pytest.raises(KeyError, match="GPT2LMHeadModel.*GPTJForCausalLM"):
        get_adapter(Tiny())


def test_architectures_key_takes_precedence(models):
    model = models["GPT2LMHeadModel"]
    model.config.architectures = ["LlamaForCausalLM"]
    try:
        assert get_adapter(model) is ADAPTERS["LlamaForCausalLM"]
    finally:
        model.config.architectures = None


MODULE_PATH = re.compile(
    r"""["'](transformer\.(h|wte|ln_f)|gpt_neox\.|model\.(layers|embed_tokens|norm)|embed_out)"""
)


def test_no_module_path_outside_the_registry():
    offenders = []
    for root in ("src", "workflow", "benchmarks"):
        for path in (REPO / root).rglob("*.py"):
            if path.resolve() == Path(adapters.__file__).resolve():
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if MODULE_PATH.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "module paths outside locedit.adapters:\n" + "\n".join(offenders)
