"""A statistics corpus sampled from the model itself (``editing.stats.corpus: sampled``).

ROME and MEMIT need the second moment C = E[k k^T] of the down-projection's input over text the
model sees. A real model has no offline corpus of its own here; text it samples is the closest
offline stand-in for its pretraining distribution (the keys' distribution under the model's own
text). Documents start from generic seed words (document ``i`` from word ``i mod len(words)``),
continue top-k at temperature 1, and are drawn from one seeded generator in batches of equal-length
prompts: :func:`sample_corpus` is deterministic on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from locedit.editing.essence import sample_rows
from locedit.scoring import encode_prompt


def sample_corpus(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    *,
    n_docs: int,
    doc_tokens: int,
    top_k: int,
    seed_words: Sequence[str],
    seed: int,
    batch_size: int = 64,
    progress=None,
) -> list[str]:
    """``n_docs`` documents of ``doc_tokens`` sampled tokens each, one line each (whitespace
    runs, newlines included, become one space), in document order.

    Documents whose seed words have the same token count share batches of up to ``batch_size``
    rows (sampling on a CPU is bound by reading the weights: larger batches are faster).
    """
    gen = torch.Generator().manual_seed(int(seed))
    prompts = [encode_prompt(tok, seed_words[i % len(seed_words)]) for i in range(n_docs)]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)
    docs: list[str | None] = [None] * n_docs
    done = 0
    for length in sorted(by_length):
        rows = by_length[length]
        for b in range(0, len(rows), batch_size):
            batch = rows[b : b + batch_size]
            texts = sample_rows(model, tok, [prompts[i] for i in batch], top_k=top_k,
                                max_new_tokens=doc_tokens, generator=gen)
            for i, text in zip(batch, texts):
                docs[i] = " ".join(text.split())
            done += len(batch)
            if progress is not None:
                progress(done, n_docs)
    return docs
