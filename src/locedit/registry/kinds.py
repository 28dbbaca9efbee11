"""Localization measurements of ``tracing.parquet``: restoration kinds and zeroing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class TraceKind:
    """One localization measurement of ``tracing.parquet``."""

    name: str
    label: str
    cmap: str  #: heatmap colour map
    component: str | None  #: the adapter component restored (None: not a restoration)


def _by_name(*items) -> Mapping:
    return MappingProxyType({item.name: item for item in items})


#: Tracing kinds: restoration of one component's output, and zeroing (paper App. C).
TRACE_KINDS: Mapping[str, TraceKind] = _by_name(
    TraceKind("hidden", "Hidden state", "Purples", "block"),
    TraceKind("mlp", "MLP", "Greens", "mlp"),
    TraceKind("attn", "Attention", "Reds", "attn"),
    TraceKind("zero", "Zeroing", "Blues", None),
)
