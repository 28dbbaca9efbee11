"""Subject noise, the one corruption of the study: Causal Tracing's noised subject, fact forcing's
``s_noise`` and FT's noised copies all add Gaussian noise to the token embeddings at the
subject's positions. Here: the draws, the embedding hooks and the noise level σ (seeds:
:mod:`locedit.seeds`).

σ is given, or derived by ROME's rule: ``multiplier`` (3) × the standard deviation of the
subject-token embeddings over the dataset. ROME's ``collect_embedding_std`` tokenises each bare
subject; here the subject tokens are those of ``prompt.format(subject)`` — exactly the
embeddings that get noised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import module_for
from locedit.hooks import forward_hooks
from locedit.data.records import subject_token_range


def make_noise(samples: int, n_tokens: int, width: int, std: float, seed: int) -> torch.Tensor:
    """The noise draws of one fact: ``[samples, n_tokens, width]`` ~ N(0, std²), CPU float32."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(samples, n_tokens, width, generator=gen) * float(std)


def subject_noise_hook(span: tuple[int, int], noise: torch.Tensor) -> Callable:
    """Embedding forward hook adding ``noise[k]`` ``[n_subject, d]`` to row k's subject positions."""
    start, end = span

    def hook(module, inputs, output):  # output: [samples, pos, d_model]
        if output.shape[0] != noise.shape[0]:
            raise RuntimeError(f"noise has {noise.shape[0]} rows, batch has {output.shape[0]}")
        output = output.clone()
        output[:, start:end] += noise.to(output.device, output.dtype)
        return output

    return hook


def subject_noise(d_model: int, n_tokens: int, std: float, seed: int) -> torch.Tensor:
    """Deterministic noise ``[n_tokens, d_model]`` ~ N(0, std²) from ``seed`` (CPU generator)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_tokens, d_model, generator=gen) * std


@contextlib.contextmanager
def noised_subject(
    model: nn.Module,
    spans: Sequence[tuple[int, int] | None],
    noise: torch.Tensor,
) -> Iterator[None]:
    """Add ``noise[:end-start]`` to the embeddings of row ``i`` at positions ``spans[i]``.

    Args:
        spans: one ``(start, end)`` token span per batch row (``None``: leave the row clean).
        noise: ``[n_tokens, d_model]``; a span longer than ``n_tokens`` is an error.

    Only applies to forward passes whose batch size equals ``len(spans)``, so generation steps
    that feed a single new token are left untouched (their subject is already in the KV cache).
    """

    def hook(module, inputs, output):  # output: [batch, pos, d_model]
        if output.shape[0] != len(spans) or output.shape[1] == 1:
            return output
        output = output.clone()
        for row, span in enumerate(spans):
            if span is None:
                continue
            start, end = span
            if end - start > noise.shape[0]:
                raise ValueError(f"subject span of {end - start} tokens exceeds noise rows")
            output[row, start:end] += noise[: end - start].to(output.device, output.dtype)
        return output

    with forward_hooks([(module_for(model, "embed"), hook)]):
        yield


def row_noise_hook(spans: list[tuple[int, int]], noises: list[torch.Tensor]):
    """Forward hook on the embedding adding ``noises[i]`` at ``spans[i]`` of row ``i``."""

    def hook(module, inputs, output):  # output: [batch, pos, d_model]
        if output.shape[0] != len(spans):
            return output
        add = torch.zeros_like(output)
        for row, ((start, end), noise) in enumerate(zip(spans, noises)):
            add[row, start:end] = noise[: end - start].to(output.device, output.dtype)
        return output + add

    return hook


@torch.no_grad()
def subject_embedding_std(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, facts: Iterable[tuple[str, str]]
) -> tuple[float, int, list[int]]:
    """Std over all entries of the embedding outputs of the subjects' tokens, in context.

    ROME's ``collect_embedding_std`` tokenises the bare subject; here the subject tokens are those
    of ``prompt.format(subject)`` — exactly the embeddings that get noised.

    Args:
        facts: ``(prompt template, subject)`` pairs.
    Returns:
        ``(std, number of subject tokens, indices of facts whose subject was not found)``.
    """
    embed = module_for(model, "embed")
    device = next(model.parameters()).device
    chunks, missing = [], []
    for i, (prompt, subject) in enumerate(facts):
        try:
            s0, s1 = subject_token_range(tokenizer, prompt, subject)
        except ValueError:
            missing.append(i)
            continue
        ids = tokenizer(prompt.format(subject))["input_ids"][s0:s1]
        chunks.append(embed(torch.tensor(ids, device=device)).double().cpu())
    if not chunks:
        raise ValueError("no subject could be located: cannot estimate the noise level")
    allemb = torch.cat(chunks)  # [n_tokens, d_model]
    return float(allemb.std()), int(allemb.shape[0]), missing


def estimate_noise_std(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[tuple[str, str]],
    multiplier: float = 3.0,
) -> float:
    """ROME's rule: σ = ``multiplier`` × std of subject-token embeddings over the dataset."""
    std, _, _ = subject_embedding_std(model, tokenizer, facts)
    return multiplier * std
