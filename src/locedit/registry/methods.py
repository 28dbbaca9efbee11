"""Editing methods: name, label, module and functions, typed hyperparameters, window rule.

A method's module is imported only by the jobs that run it; its path is written here, so the
workflow's code-hash walker follows it statically (``workflow/rules/editing_functions.smk``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import MappingProxyType

from locedit.editing.hparams import FTHparams, Hparams, MEMITHparams, ROMEHparams, merge_variant, resolve
from locedit.layer_windows import edit_window
from locedit.registry.variants import ERROR_INJECTION


@dataclass(frozen=True)
class Method:
    """One editing method.

    ``apply(model, tok, request, layer, hparams, stats, context_templates) -> (Snapshot, info)``
    edits one fact (the per-fact path, the authors' algorithm); ``batch(model, tok, requests,
    layer, hparams, stats, context_templates, **engine)`` yields ``(Snapshot, info)`` per request
    with its edit applied (the batched engine); None runs ``apply`` per fact.
    """

    name: str  #: config, path and table name
    label: str  #: figure and table label
    paper_code: str  #: its code in the paper's tables (reference numbers)
    module: str  #: the module holding its functions (and, transitively, all its own code)
    apply: str  #: per-fact function name in ``module``
    batch: str | None  #: batched-engine function name in ``module`` (None: per fact)
    hparams: type[Hparams]  #: its frozen hyperparameter class
    needs_stats: bool = False  #: reads covariance statistics and context templates
    templates: str | None = None  #: which context-template list it reads (``context_templates.json``)
    fixed: Mapping = field(default_factory=dict)  #: hyperparameters its name fixes (FT-5: window 5)
    section: str | None = None  #: the ``editing.methods`` section it reads (None: its name)
    #: In the workflow, replay the per-fact vectors another method's jobs export (same section,
    #: same optimisation; :mod:`locedit.editing.vectors`) with ``replay(model, layer, vectors,
    #: opt_seconds) -> (Snapshot, info)`` instead of optimising them again (r-ROME: ROME's v*).
    reuses: str | None = None
    replay: str | None = None  #: the replay function's name in ``module``
    #: Seconds per edit in the default toy run (error injection), and under a noised subject
    #: (fact forcing: FT optimises num_noise_samples noised copies): edit jobs of costlier
    #: (method, problem) pairs start first (locedit.registry.rules.edit_priority), so that a run
    #: does not end on one long job. Scheduling only: no result depends on them.
    cost: float = 1.0
    cost_noised: float = 1.0

    @property
    def config_section(self) -> str:
        return self.section or self.name

    def resolve(self, hparams: Mapping | Hparams | None) -> Hparams:
        """A config section (``per_variant`` merged) as this method's checked hyperparameters."""
        return resolve(self.hparams, hparams, f"editing.methods.{self.config_section}", self.fixed)

    def window(self, hparams: Mapping | Hparams | None) -> int:
        """Layers an edit rewrites: the name's fixed window, else the ``window`` key, else 1."""
        hp = self.resolve(hparams)
        return int(getattr(hp, "window", 1))

    def edited_layers(self, centre: int, hparams: Mapping | Hparams | None, n_layers: int) -> list[int]:
        """The layers an edit centred on ``centre`` rewrites (the one window rule)."""
        return edit_window(centre, self.window(hparams), n_layers)

    @property
    def exports(self) -> bool:
        """Whether its jobs export per-fact vectors (a registered method replays them)."""
        return any(m.reuses == self.name for m in METHODS.values())

    def function(self, batched: bool = False, replay: bool = False) -> Callable:
        """The apply (or batched, or replay) function, importing its module now."""
        name = self.replay if replay else self.batch if batched else self.apply
        if name is None:
            raise ValueError(f"method {self.name!r} has no {'replay' if replay else 'batched'} function")
        return getattr(importlib.import_module(self.module), name)


_METHODS: dict[str, Method] = {}
#: Every registered editing method by name (read-only view; add with :func:`register_method`).
METHODS: Mapping[str, Method] = MappingProxyType(_METHODS)


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name may be registered once)."""
    if method.name in _METHODS:
        raise ValueError(f"editing method {method.name!r} is already registered")
    if method.reuses is not None:  # replayed vectors are only the same edit under one section
        source = _METHODS.get(method.reuses)
        if source is None or source.config_section != method.config_section or not method.replay:
            raise ValueError(
                f"editing method {method.name!r} reuses {method.reuses!r}: that must be a registered "
                "method reading the same config section, and it needs a replay function"
            )
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method registered by a test or a plugin."""
    _METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is an error listing the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown editing method {name!r}; expected one of {sorted(_METHODS)}") from None


# Registered in the paper's table order (tables and figures list methods in this order).
FT1 = register_method(Method(
    "ft-1", "FT-1", "FT1", "locedit.editing.ft", "apply_ft", "edit_ft_batch",
    FTHparams, fixed=MappingProxyType({"window": 1}), cost=0.04, cost_noised=0.25,
))  # fmt: skip
FT5 = register_method(Method(
    "ft-5", "FT-5", "FT5", "locedit.editing.ft", "apply_ft", "edit_ft_batch",
    FTHparams, fixed=MappingProxyType({"window": 5}), cost=0.07, cost_noised=0.31,
))  # fmt: skip
ROME = register_method(Method(
    "rome", "ROME", "ROME", "locedit.editing.rome", "apply_rome", "edit_rome_batch",
    ROMEHparams, needs_stats=True, templates="rome", cost=0.32, cost_noised=0.34,
))  # fmt: skip
MEMIT = register_method(Method(
    "memit", "MEMIT", "MEMIT", "locedit.editing.memit", "apply_memit", "edit_memit_batch",
    MEMITHparams, needs_stats=True, templates="memit", cost=0.16, cost_noised=0.17,
))  # fmt: skip
# Beyond the paper: ROME with its key mismatch fixed (Gupta et al. 2024); ROME's settings.
R_ROME = register_method(Method(
    "r-rome", "r-ROME", "", "locedit.editing.rome", "apply_r_rome", "edit_r_rome_batch",
    ROMEHparams, needs_stats=True, templates=ROME.templates, section=ROME.name,
    reuses=ROME.name, replay="replay_r_rome", cost=0.0, cost_noised=0.0,
))  # fmt: skip


def vector_sources(run_methods) -> list[str]:
    """Methods whose jobs a run needs for their exported vectors (``reuses``), run or not."""
    return sorted({METHODS[m].reuses for m in run_methods if m in METHODS and METHODS[m].reuses})


def job_methods(run_methods) -> list[str]:
    """The registered methods a run has edit jobs for: its run methods and their vector sources."""
    return sorted(m for m in set(run_methods) | set(vector_sources(run_methods)) if m in METHODS)


def tuned_sections(run_methods) -> list[str]:
    """The config sections the tuning stage tunes for a run, each named after the method owning
    it (r-ROME's is ROME's, whose edits it replays)."""
    return sorted({METHODS[m].config_section for m in job_methods(run_methods)})


def config_problems(editing: Mapping, n_layers: int | None = None) -> list[str]:
    """The ``editing`` config section against the registry, one line per problem naming its key:
    run methods not registered, method sections of no registered method, hyperparameters that
    do not resolve (per run variant), and, given the model's depth, ROME/MEMIT windows whose
    statistics ``editing.stats.layers`` leaves out. Run when the workflow is planned."""
    problems = []
    unregistered = [m for m in editing["run_methods"] if m not in METHODS]
    if unregistered:
        problems.append(f"editing.run_methods: {unregistered} are not registered methods "
                        f"(locedit.registry: {list(METHODS)})")
    problems += _hparam_problems(editing)
    if editing.get("tuning", {}).get("enabled"):
        problems += _tuning_problems(editing)
    if n_layers is not None and editing["stats"]["layers"] != "all":
        problems += _stats_coverage(editing, n_layers)
    return problems


def _hparam_problems(ed: Mapping) -> list[str]:
    """Each run method's section, with each run variant's overrides, as its typed hyperparameters
    (unknown keys, keys its name fixes, values out of range), one line per problem."""
    sections = {m.config_section for m in METHODS.values()}
    problems = [
        f"editing.methods.{name}: not a registered method (locedit.registry: {list(METHODS)})"
        for name in ed["methods"]
        if name not in sections
    ]  # the schema leaves method sections open to registered methods; this closes them
    run = [METHODS[m] for m in ed["run_methods"] if m in METHODS]
    missing = [m.name for m in run if m.config_section not in ed["methods"]]
    if missing:
        problems.append(f"editing.run_methods: {missing} have no entry under editing.methods")
    for spec in run:
        if spec.config_section not in ed["methods"]:
            continue  # reported above
        for variant in ed["variants"]:
            try:
                spec.resolve(merge_variant(ed["methods"][spec.config_section], variant))
            except (TypeError, ValueError) as err:
                problems.append(f"{err} (variant {variant})")
    return sorted(set(problems))


def _tuning_problems(ed: Mapping) -> list[str]:
    """Every tuned section (each run method's, and its replayed source's) has a grid, and each
    candidate resolves for each run variant."""
    from itertools import product

    tuning, problems = ed["tuning"], []
    for name in tuned_sections(ed["run_methods"]):
        grid = tuning["grids"].get(name)
        if not grid:
            problems.append(f"editing.tuning.grids.{name}: missing (tuning.enabled tunes every run method)")
            continue
        spec = METHODS[name]
        for values in product(*grid.values()):
            candidate = dict(zip(grid, values))
            for variant in ed["variants"]:
                try:
                    spec.resolve({**merge_variant(ed["methods"].get(name), variant), **candidate})
                except (TypeError, ValueError) as err:
                    problems.append(f"editing.tuning.grids.{name}: candidate {candidate}: {err}")
                    break
    return problems


def _stats_coverage(ed: Mapping, n_layers: int) -> list[str]:
    """Edit layers of methods with statistics (ROME/MEMIT) that ``editing.stats.layers`` leaves out."""
    have = set(ed["stats"]["layers"])
    need: set[int] = set()
    for name in ed["run_methods"]:
        spec = METHODS.get(name)
        if spec is None or not spec.needs_stats:
            continue
        for variant in ed["variants"]:
            try:
                hp = spec.resolve(merge_variant(ed["methods"].get(spec.config_section), variant))
            except (TypeError, ValueError):
                continue  # reported by _hparam_problems
            for layer in ed["layers"]:
                if 0 <= layer < n_layers:
                    need |= set(spec.edited_layers(layer, hp, n_layers))
    missing = sorted(need - have)
    if not missing:
        return []
    return [f"editing.stats.layers: ROME/MEMIT edits need the statistics of layer(s) {missing}"]


def config_hparams(method: str, variant: str = ERROR_INJECTION.name,
                   path: str | PathLike = "config.yaml") -> dict:
    """``editing.methods.<method>`` of a workflow config, with its ``per_variant`` override for
    ``variant`` merged in: the hyperparameters the workflow's edit jobs use (e.g. the toy's)."""
    import yaml

    methods = (yaml.safe_load(Path(path).read_text()) or {}).get("editing", {}).get("methods", {})
    return merge_variant(methods.get(get_method(method).config_section), variant)
