"""Essence texts (ROME's "essence drift" probe, Hase et al. App. B): sampling and perplexity.

Before any edit, ``n`` texts are sampled from ``"{subject} is a"`` with top-k (k = 5, temperature
1) multinomial sampling, like the authors' ``generate_fast``; the texts include the prompt. After
an edit the mean per-text perplexity is compared with the pre-edit one
(:func:`locedit.editing.metrics.essence_score`). Sampling uses its own ``torch.Generator``, so the
texts depend only on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from locedit.kernels import fused_activations
from locedit.noise import noised_subject
from locedit.modeling import cache_kwargs, output_cache
from locedit.scoring import encode_prompt, right_pad

ESSENCE_PROMPT = "{} is a"


def sample_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    n: int = 5,
    top_k: int = 5,
    max_new_tokens: int = 40,
    seed: int = 0,
) -> list[str]:
    """``n`` texts ``prompt + continuation`` sampled top-k with a KV cache.

    All rows share the prompt, so the batch needs no padding. A row that emits EOS is cut there.
    """
    gen = torch.Generator().manual_seed(int(seed))
    prompt_ids = encode_prompt(tokenizer, prompt)
    return sample_rows(model, tokenizer, [prompt_ids] * n, top_k=top_k,
                       max_new_tokens=max_new_tokens, generator=gen)


@torch.no_grad()
def sample_rows(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    top_k: int,
    max_new_tokens: int,
    generator: torch.Generator,
) -> list[str]:
    """One text per row of ``prompt_ids`` (rows of equal length: no padding), its prompt and a
    top-k continuation of ``max_new_tokens`` sampled with a KV cache, drawn from ``generator``
    on the CPU (reproducible on any device); a row that emits EOS is cut there."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(r) for r in prompt_ids], device=device)  # [n, pos]
    n = ids.shape[0]
    out = model(input_ids=ids, use_cache=True)
    past, logits = output_cache(out), out.logits[:, -1]
    new_tokens = []
    for _ in range(max_new_tokens):
        top = torch.topk(logits.float().cpu(), k=min(top_k, logits.shape[-1]), dim=-1)
        probs = torch.softmax(top.values, dim=-1)  # [n, k]
        choice = torch.multinomial(probs, 1, generator=generator)  # [n, 1]
        nxt = top.indices.gather(1, choice)  # [n, 1]
        new_tokens.append(nxt)
        out = model(input_ids=nxt.to(device), use_cache=True, **cache_kwargs(model, past))
        past, logits = output_cache(out), out.logits[:, -1]
    texts = []
    cont = torch.cat(new_tokens, dim=1).tolist() if new_tokens else [[] for _ in range(n)]
    eos = tokenizer.eos_token_id
    for prompt, row in zip(prompt_ids, cont):
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        # Decoding prompt and continuation together keeps SentencePiece word boundaries.
        texts.append(tokenizer.decode(list(prompt) + row, skip_special_tokens=True))
    return texts


def text_subject_span(
    tokenizer: PreTrainedTokenizerBase, text: str, subject: str
) -> tuple[int, int] | None:
    """Token span of the first occurrence of ``subject`` in ``text`` (``None`` if absent)."""
    i = text.find(subject)
    if i < 0:
        return None
    enc = tokenizer(text, return_offsets_mapping=True)
    toks = [
        t
        for t, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < i + len(subject) and b > i
    ]
    return (toks[0], toks[-1] + 1) if toks else None


@torch.no_grad()
def perplexities(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_tokens: int = 100,
    subject: str | None = None,
    noise: torch.Tensor | None = None,
) -> list[float]:
    """Per-text perplexity ``exp(mean NLL)`` of the first ``max_tokens`` tokens, one batch.

    With ``noise`` (fact forcing) the subject's embeddings are noised in every text that
    contains ``subject``.
    """
    if not texts:
        return []
    device = next(model.parameters()).device
    rows = [encode_prompt(tokenizer, t)[:max_tokens] for t in texts]
    ids, mask = right_pad(rows, tokenizer.pad_token_id)
    spans = None
    if noise is not None:
        spans = [text_subject_span(tokenizer, t, subject) for t in texts]
        # A span cut by the truncation keeps only its visible part.
        spans = [
            None if s is None or s[0] >= len(r) else (s[0], min(s[1], len(r)))
            for s, r in zip(spans, rows)
        ]
    ids, mask = ids.to(device), mask.to(device)
    with fused_activations(model):  # as the probes (locedit.editing.evaluate)
        if spans is not None:
            with noised_subject(model, spans, noise):
                logits = model(input_ids=ids, attention_mask=mask).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits  # [n, pos, vocab]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok_lp = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [n, pos-1]
    m = mask[:, 1:].float()
    nll = -(tok_lp * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.exp(nll).cpu().tolist()
