"""The analysis stage's figures (the workflow declares them) and the paper's headline cell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from locedit.registry.methods import FT5, ROME
from locedit.registry.variants import ERROR_INJECTION, FACT_FORCING


@dataclass(frozen=True)
class Figure:
    """One figure of the analysis stage: written by ``rule`` as PNG (in the report) and PDF."""

    stem: str
    rule: str
    caption: str  #: caption file under workflow/report/
    category: str  #: report category
    cell: tuple[str, str] | None = None  #: (variant, method) it shows, when it shows one
    probes: bool = False  #: made only when editing.probes is on


#: The paper's headline cell (Table 1, Figs. 4, 15): ROME under error injection.
HEADLINE = (ERROR_INJECTION.name, ROME.name)

_EI_ROME, _FF_FT5 = HEADLINE, (FACT_FORCING.name, FT5.name)
_BY_LAYER, _TRACE_VS_EDIT = "Edit success by layer", "Tracing vs editing"
#: Every figure of the analysis stage, by stem (the workflow declares these outputs).
FIGURES: Mapping[str, Figure] = MappingProxyType({f.stem: f for f in (
    Figure("fig07_scores_by_layer", "plot_edit_scores", "fig07.rst", _BY_LAYER),
    Figure("fig08_essence_by_layer", "plot_edit_scores", "fig08.rst", _BY_LAYER),
    Figure("fig09_overall_by_layer", "plot_edit_scores", "fig09.rst", _BY_LAYER),
    Figure("fig06_r2_layer_vs_trace", "plot_r2_bars", "fig06.rst", "Regressions"),
    Figure("fig06b_r2_overall", "plot_r2_bars", "fig06b.rst", "Regressions"),
    Figure("fig12_r2_by_window", "plot_r2_bars", "fig12.rst", "Regressions"),
    Figure("fig04_rewrite_vs_trace", "plot_trace_scatter", "fig04.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig14_unscaled", "plot_trace_scatter", "fig14.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig15_rome_rewrite_by_layer", "plot_trace_scatter", "fig15.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig16_rome_last_token_by_layer", "plot_trace_scatter", "fig16.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig17_ff_ft5_by_layer", "plot_trace_scatter", "fig17.rst", _TRACE_VS_EDIT, _FF_FT5),
    Figure("fig18_rome_overall_by_layer", "plot_trace_scatter", "fig18.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig21_zeroing_rewrite_by_layer", "plot_trace_scatter", "fig21.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig22_zeroing_overall_by_layer", "plot_trace_scatter", "fig22.rst", _TRACE_VS_EDIT, _EI_ROME),
    Figure("fig10_tracing_by_window", "plot_tracing_windows", "fig10.rst", "Tracing"),
    Figure("fig11_peaks_by_window", "plot_tracing_windows", "fig11.rst", "Tracing"),
    Figure("generalisation_probes", "plot_probes", "probes.rst", "Generalisation probes", probes=True),
)})  # fmt: skip


def figures_of(rule: str) -> dict[str, Figure]:
    """The figures one plotting rule writes, by stem, in registry order."""
    return {stem: f for stem, f in FIGURES.items() if f.rule == rule}
