"""Scoped forward hooks: every intervention is a context manager that always removes its hooks.

Hook callbacks have one signature, ``fn(module, inputs, output) -> output | None``; a block's tuple
output goes through :func:`locedit.adapters.untuple`.

The subject-noise intervention built on them lives in :mod:`locedit.noise`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import nn


@contextlib.contextmanager
def forward_hooks(hooks: Sequence[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Register ``(module, fn)`` forward hooks for the duration of the block."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
