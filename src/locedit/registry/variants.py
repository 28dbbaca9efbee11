"""The five editing problems (paper §5.1, Fig. 5); their target rules: locedit.editing.variants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Variant:
    """One editing problem (paper §5.1, Fig. 5); its target rules live in editing.variants."""

    name: str
    label: str
    paper_code: str
    #: the tracing output its edit inputs read (None: none, so tracing changes leave it be)
    tracing_input: str | None = None
    #: the analysis keeps only facts eligible for it (paper App. B: erasure needs p(o_true) high)
    analysis_eligible_only: bool = False


def _by_name(*items) -> Mapping:
    return MappingProxyType({item.name: item for item in items})


ERROR_INJECTION = Variant("error_injection", "Error Injection", "EI")
TRACING_REVERSAL = Variant("tracing_reversal", "Tracing Reversal", "TR", tracing_input="o_noise")
FACT_ERASURE = Variant("fact_erasure", "Fact Erasure", "FE", analysis_eligible_only=True)
FACT_AMPLIFICATION = Variant("fact_amplification", "Fact Amplification", "FA")
FACT_FORCING = Variant("fact_forcing", "Fact Forcing", "FF", tracing_input="noise")
#: The five editing problems, in the paper's order.
VARIANTS: Mapping[str, Variant] = _by_name(
    ERROR_INJECTION, TRACING_REVERSAL, FACT_ERASURE, FACT_AMPLIFICATION, FACT_FORCING
)
