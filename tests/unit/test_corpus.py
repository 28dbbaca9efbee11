"""The model-sampled statistics corpus (editing.stats.corpus: sampled)."""

from __future__ import annotations

from locedit.editing.corpus import sample_corpus
from locedit.editing.essence import sample_texts


def _sample(model, tok, **kw):
    args = dict(n_docs=7, doc_tokens=6, top_k=20, seed_words=["The", "In", "A"], seed=3, batch_size=4)
    return sample_corpus(model, tok, **{**args, **kw})


def test_documents_start_from_the_seed_words_in_turn_and_are_one_line(tiny_gpt2, tiny_tokenizer):
    docs = _sample(tiny_gpt2, tiny_tokenizer)
    assert len(docs) == 7
    assert [d.split()[0][: len(w)] for d, w in zip(docs, ["The", "In", "A"] * 3)] == ["The", "In", "A"] * 2 + ["The"]
    assert all("\n" not in d and d == " ".join(d.split()) for d in docs)
    assert len(set(docs)) == len(docs)  # sampled, not one text repeated


def test_sampling_is_seeded(tiny_gpt2, tiny_tokenizer):
    assert _sample(tiny_gpt2, tiny_tokenizer) == _sample(tiny_gpt2, tiny_tokenizer)
    assert _sample(tiny_gpt2, tiny_tokenizer) != _sample(tiny_gpt2, tiny_tokenizer, seed=4)


def test_a_single_prompt_batch_is_the_essence_sampler(tiny_gpt2, tiny_tokenizer):
    """Both samplers draw the same way: one seed word, one batch, equals sample_texts."""
    docs = _sample(tiny_gpt2, tiny_tokenizer, n_docs=3, seed_words=["The"], batch_size=8)
    texts = sample_texts(tiny_gpt2, tiny_tokenizer, "The", n=3, top_k=20, max_new_tokens=6, seed=3)
    assert docs == [" ".join(t.split()) for t in texts]
