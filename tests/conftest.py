"""Shared fixtures: a tiny byte-level BPE tokenizer and random tiny models (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]

# Test models are tiny: one thread avoids thread start-up and oversubscription costs that made
# the unit tests ~30x slower on a loaded 2-core machine (workflow runs set their own threads).
torch.set_num_threads(1)


def _corpus() -> list[str]:
    texts = []
    for rec in json.loads((FIXTURES / "counterfact_sample_5.json").read_text()):
        rw = rec["requested_rewrite"]
        texts.append(rw["prompt"].format(rw["subject"]) + " " + rw["target_true"]["str"])
        texts += rec["paraphrase_prompts"] + rec["neighborhood_prompts"] + rec["attribute_prompts"]
    for rec in json.loads((FIXTURES / "zsre_mend_eval_sample_5.json").read_text()):
        texts += [rec["src"], rec["rephrase"], rec["loc"], " ".join(rec["answers"])]
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer() -> GPT2TokenizerFast:
    """A ~600-token byte-level BPE trained on the fixture texts (seconds, deterministic)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _corpus(), vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_tokenizer) -> GPT2LMHeadModel:
    """A random 4-layer GPT-2 over the tiny tokenizer's vocabulary, eval mode, no grads."""
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=4, n_embd=32, n_head=4, n_positions=128, vocab_size=len(tiny_tokenizer),
        bos_token_id=tiny_tokenizer.eos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def counterfact_records() -> list[dict]:
    return json.loads((FIXTURES / "counterfact_sample_5.json").read_text())


@pytest.fixture
def unfused_engines(monkeypatch):
    """The editing engines with the model's own activation modules (no fused GELU swap).

    On random test models Adam turns noise-level gradient components into full steps, so any
    change of float rounding moves an optimised value by ~1%; comparisons of the engines' replay
    with the per-fact path therefore keep the arithmetic identical (tests/models/test_editing_engine.py).
    """
    import contextlib

    from locedit.editing import engine, ft

    monkeypatch.setattr(engine, "fused_activations", lambda model: contextlib.nullcontext())
    monkeypatch.setattr(ft, "fused_activations", lambda model: contextlib.nullcontext())


def pytest_collection_modifyitems(config, items):
    """The tests that read the study run first, cluster tests last, stable otherwise.

    Under ``-n 2 --dist loadgroup`` the worker of the study-run group starts the run at once,
    and the other worker runs the rest of the suite meanwhile instead of idling at the end while
    the run is made. The SLURM test installs and starts SLURM on the host (``slurm_down.sh``
    puts /etc/slurm back after it), so nothing else runs after it in a session that selects it.
    """

    def reads_study(item) -> bool:
        return any(m.args == ("study_run",) for m in item.iter_markers("xdist_group"))

    items.sort(key=lambda item: (item.get_closest_marker("cluster") is not None, not reads_study(item)))
