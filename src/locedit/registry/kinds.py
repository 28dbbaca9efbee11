"""Localization measurements of ``tracing.parquet``: restoration kinds and zeroing.

A restoration kind patches one component's output (``component``) between two runs of a fact:

* **corruption** — how the corrupted run differs from the clean one: ``gaussian`` noise on the
  subject's token embeddings (the paper's Causal Tracing), or ``str``, symmetric token
  replacement: the subject's tokens replaced by those of another subject of the dataset with
  as many tokens in the prompt (Zhang & Nanda 2024), so the corrupted input stays in
  distribution;
* **direction** — ``denoise`` restores clean states into the corrupted run (is the site
  *sufficient* to bring the answer back?), ``noise`` patches corrupted states into the clean
  run (is the site *necessary*?) (Heimersheim & Nanda 2024);
* **metric** — what is read from the patched run: ``prob``, the target's probability (the
  paper's), ``logprob`` its log-probability, or ``logit_diff``, the first target token's logit
  minus a contrast token's (the corrupted run's answer for ``str``, ``target_new``'s first
  token for ``gaussian``).

Each combination is one registered kind. The paper's (``mlp``, ``attn``, ``hidden``) are
gaussian / denoise / prob; the others carry their settings in their names (``mlp_str``,
``mlp_noising``, ``mlp_str_noising_logit_diff``, ...). How each becomes an effect:
:mod:`locedit.tracing.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

CORRUPTIONS = ("gaussian", "str")
DIRECTIONS = ("denoise", "noise")
METRICS = ("prob", "logprob", "logit_diff")
#: How each setting reads in a kind's label (the paper's settings are left out).
_SETTING_LABELS = {"str": "STR", "noise": "noising", "logprob": "log p", "logit_diff": "logit diff"}
_NAME_PARTS = {"str": "_str", "noise": "_noising", "logprob": "_logprob", "logit_diff": "_logit_diff"}


@dataclass(frozen=True)
class TraceKind:
    """One localization measurement of ``tracing.parquet``."""

    name: str
    label: str
    cmap: str  #: heatmap colour map
    component: str | None  #: the adapter component restored (None: not a restoration)
    #: the restoration kind it estimates to first order from gradients (attribution patching)
    estimates: str | None = None
    corruption: str = "gaussian"
    direction: str = "denoise"
    metric: str = "prob"

    @property
    def paper_settings(self) -> bool:
        """Whether it patches as the paper does (gaussian noise, denoising, probability)."""
        return (self.corruption, self.direction, self.metric) == ("gaussian", "denoise", "prob")

    @property
    def alternative(self) -> bool:
        """Whether the analysis regresses it as a localizer beside the paper's tracing
        (zeroing, attribution patching, and every restoration with other settings)."""
        return self.component is None or self.estimates is not None or not self.paper_settings


def _by_name(*items) -> Mapping:
    return MappingProxyType({item.name: item for item in items})


_RESTORED = (("hidden", "Hidden state", "Purples", "block"), ("mlp", "MLP", "Greens", "mlp"),
             ("attn", "Attention", "Reds", "attn"))  # fmt: skip


def _variants():
    """The restoration kinds with other corruption, direction or metric, one per combination."""
    for base, label, cmap, component in _RESTORED:
        for corruption in CORRUPTIONS:
            for direction in DIRECTIONS:
                for metric in METRICS:
                    settings = (corruption, direction, metric)
                    if settings == ("gaussian", "denoise", "prob"):
                        continue
                    shown = [_SETTING_LABELS[s] for s in settings if s in _SETTING_LABELS]
                    yield TraceKind(
                        base + "".join(_NAME_PARTS.get(s, "") for s in settings),
                        ", ".join([label, *shown]), cmap, component,
                        corruption=corruption, direction=direction, metric=metric,
                    )  # fmt: skip


#: Tracing kinds: restoration of one component's output, zeroing (paper App. C) and, beyond
#: the paper, attribution patching of the MLP restoration (locedit.tracing.attribution) and
#: restorations with symmetric token replacement, noising and other metrics.
TRACE_KINDS: Mapping[str, TraceKind] = _by_name(
    *(TraceKind(base, label, cmap, component) for base, label, cmap, component in _RESTORED),
    TraceKind("zero", "Zeroing", "Blues", None),
    TraceKind("atp", "MLP, attribution patching", "Oranges", None, estimates="mlp"),
    TraceKind("atp_attn", "Attention, attribution patching", "Oranges", None, estimates="attn"),
    TraceKind("atp_hidden", "Hidden state, attribution patching", "Oranges", None, estimates="hidden"),
    *_variants(),
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


def replaced_kinds(runs) -> list[str]:
    """The kinds among ``runs`` (``tracing.runs`` items) that corrupt by symmetric token
    replacement: their facts need partner subjects from the dataset."""
    return sorted({r["kind"] for r in runs if TRACE_KINDS[r["kind"]].corruption == "str"})
