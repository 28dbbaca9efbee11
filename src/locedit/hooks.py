"""Scoped forward hooks: every intervention is a context manager that always removes its hooks.

Hook callbacks have one signature, ``fn(module, inputs, output) -> output | None``; a block's tuple
output goes through :func:`locedit.adapters.untuple`.

The subject-noise intervention (Causal Tracing's corruption, and fact forcing's ``s_noise``) adds
a fixed Gaussian noise matrix to the token embeddings at the subject's positions, row by row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from locedit.adapters import module_for


@contextlib.contextmanager
def forward_hooks(hooks: Sequence[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Register ``(module, fn)`` forward hooks for the duration of the block."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


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
