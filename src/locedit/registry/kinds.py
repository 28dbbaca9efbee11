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
    #: the restoration kind it estimates to first order from gradients (attribution patching)
    estimates: str | None = None


def _by_name(*items) -> Mapping:
    return MappingProxyType({item.name: item for item in items})


#: Tracing kinds: restoration of one component's output, zeroing (paper App. C) and, beyond
#: the paper, attribution patching of the MLP restoration (locedit.tracing.attribution).
TRACE_KINDS: Mapping[str, TraceKind] = _by_name(
    TraceKind("hidden", "Hidden state", "Purples", "block"),
    TraceKind("mlp", "MLP", "Greens", "mlp"),
    TraceKind("attn", "Attention", "Reds", "attn"),
    TraceKind("zero", "Zeroing", "Blues", None),
    TraceKind("atp", "MLP, attribution patching", "Oranges", None, estimates="mlp"),
    TraceKind("atp_attn", "Attention, attribution patching", "Oranges", None, estimates="attn"),
    TraceKind("atp_hidden", "Hidden state, attribution patching", "Oranges", None, estimates="hidden"),
)


def estimate_pairs(runs) -> list[tuple[str, str, int]]:
    """``(estimate kind, exact kind, window)`` for every estimating run (``tracing.runs`` items)
    whose exact run is traced too: the pairs ``measure_atp_agreement`` compares."""
    traced = {(r["kind"], int(r["window"])) for r in runs}
    return sorted(
        (kind, TRACE_KINDS[kind].estimates, window)
        for kind, window in traced
        if TRACE_KINDS[kind].estimates is not None and (TRACE_KINDS[kind].estimates, window) in traced
    )
