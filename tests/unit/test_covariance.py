"""Covariance statistics: one pass = per-layer brute force, resumable bit-exactly, ROME .npz I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locedit.adapters import module_for, module_name
from locedit.editing.covariance import (
    MANIFEST,
    PARTIAL,
    CovarianceStore,
    accumulate_second_moments,
    compute_layer_stats,
    load_npz_moment,
    write_manifest,
)
from locedit.hooks import forward_hooks
from tests.conftest import _corpus
from tests.unit.test_rome import _model


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(_corpus()[:60]) + "\n\n")
    return path


def _brute_force(model, tok, docs, layer, max_length):
    """Σ kkᵀ / n by running each document alone and stacking every token's key."""
    keys = []

    def hook(module, inputs, output):
        keys.append(inputs[0][0].double())

    with forward_hooks([(module_for(model, "mlp_out", layer), hook)]):
        for d in docs:
            model(input_ids=torch.tensor([tok(d)["input_ids"][:max_length]]))
    k = torch.cat(keys)
    return k.T @ k / len(k)


def test_one_pass_equals_brute_force_per_layer(tiny_tokenizer):
    model = _model(tiny_tokenizer, "llama")
    docs = _corpus()[:20]
    state = accumulate_second_moments(model, tiny_tokenizer, docs, [0, 2], max_length=16, batch_size=6)
    assert set(state.sums) == {0, 2} and state.n_docs == len(docs)
    for layer in (0, 2):
        brute = _brute_force(model, tiny_tokenizer, docs, layer, 16)
        assert torch.allclose((state.sums[layer] / state.count).double(), brute, rtol=1e-4, atol=1e-6)


def test_interrupted_run_resumes_bit_exactly(tiny_tokenizer, corpus_file, tmp_path):
    model = _model(tiny_tokenizer)
    kw = dict(layers=[1, 3], batch_size=4, checkpoint_every=2, max_length=32)
    full = compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "full", **kw)
    with pytest.raises(InterruptedError):
        compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "cut", stop_after_batches=5, **kw)
    assert (tmp_path / "cut" / PARTIAL).exists()
    resumed = compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "cut", **kw)
    assert not (tmp_path / "cut" / PARTIAL).exists()
    assert resumed["n_tokens"] == full["n_tokens"] and resumed["n_documents"] == 60
    for layer in (1, 3):
        a = np.load(tmp_path / "full" / f"layer_{layer}.npz")["mom2.mom2"]
        b = np.load(tmp_path / "cut" / f"layer_{layer}.npz")["mom2.mom2"]
        assert np.array_equal(a, b)


def test_stale_checkpoint_is_ignored(tiny_tokenizer, corpus_file, tmp_path):
    model = _model(tiny_tokenizer)
    kw = dict(layers=[1], batch_size=4, sample_size=30)
    with pytest.raises(InterruptedError):
        compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path, seed=1, checkpoint_every=1,
                            stop_after_batches=3, **kw)  # fmt: skip
    # Another seed samples other documents: the partial sums must not be reused.
    compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path, seed=2, **kw)
    compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "ref", seed=2, **kw)
    got = np.load(tmp_path / "layer_1.npz")
    ref = np.load(tmp_path / "ref" / "layer_1.npz")
    assert got["mom2.count"] == ref["mom2.count"]
    assert np.array_equal(got["mom2.mom2"], ref["mom2.mom2"])


def test_store_reads_manifest_and_rome_npz(tiny_tokenizer, corpus_file, tmp_path):
    model = _model(tiny_tokenizer)
    manifest = compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "ours", layers="all", batch_size=8)
    write_manifest(manifest, tmp_path / "ours")
    assert manifest["layers"] == [0, 1, 2, 3]
    store = CovarianceStore.from_dir(tmp_path / "ours" / MANIFEST, model=model)
    c = store.mom2(2)
    assert c.shape == (128, 128) and torch.allclose(c, c.T)
    # A ROME-format file (as published: extra keys, its own name) is read the same way.
    rome_dir = tmp_path / "rome"
    rome_dir.mkdir()
    raw = np.load(tmp_path / "ours" / "layer_2.npz")
    name = f"{module_name(model, 'mlp_out', 2)}_float32_mom2_100000.npz"
    np.savez(rome_dir / name, **{"mom2.mom2": raw["mom2.mom2"], "mom2.count": raw["mom2.count"],
                                 "mom2.constructor": np.array("util.runningstats.SecondMoment()")})  # fmt: skip
    rome = CovarianceStore.from_rome_npz(rome_dir, model)
    assert torch.equal(rome.mom2(2), c)
    # ... and compute_layer_stats copies it instead of computing layer 2.
    mixed = compute_layer_stats(model, tiny_tokenizer, corpus_file, tmp_path / "mixed", layers=[1, 2], batch_size=8, rome_npz_dir=str(rome_dir))
    assert mixed["sources"]["2"].startswith("rome_npz:") and mixed["sources"]["1"] == "computed"
    assert torch.equal(load_npz_moment(tmp_path / "mixed" / "layer_2.npz"), c)
    with pytest.raises(KeyError, match="layer 7"):
        store.mom2(7)
    assert json.loads((tmp_path / "ours" / MANIFEST).read_text())["files"]["0"] == "layer_0.npz"


def test_inverse_solves_and_caches_factor():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 90, generator=g)
    c = a @ a.T / 90
    calls = []
    store = CovarianceStore(lambda layer: (calls.append(layer), c)[1])
    k = torch.randn(30, generator=g)
    expect = torch.linalg.solve(c.double(), k.double())
    assert torch.allclose(store.inv_times(0, k).double(), expect, rtol=1e-4)
    assert torch.allclose(store.inv(0).double() @ k.double(), expect, rtol=1e-4)
    assert calls == [0]  # C loaded and factorised once per layer


def test_singular_covariance_gets_jitter():
    a = torch.randn(20, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    store = CovarianceStore.from_matrices({0: a @ a.T})  # rank 5 < 20
    out = store.inv_times(0, torch.ones(20))
    assert torch.isfinite(out).all() and store.jitter[0] > 0
