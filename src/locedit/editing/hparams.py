"""Typed hyperparameters of the editing methods: one frozen dataclass per method family.

Each class holds its keys, their defaults (the authors' GPT-J code values, paper-spec §6) and
their documentation; ``config.yaml`` (``editing.methods.<method>``) overrides them and the
schema's defaults are tested against them (``tests/unit/test_registry.py``). A config section
becomes an instance in one step, :func:`resolve`: ``per_variant.<variant>`` merged over the
section, unknown keys refused naming the config path, ranges checked. Plain Python (no torch):
planning checks every configured section with it before a job runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: Lookup tokens of ROME/MEMIT's keys and values.
FACT_TOKENS = ("subject_last", "last")
#: How keys average over context templates: ROME's flat mean, MEMIT's bare/prefixed halves.
KEY_AVERAGES = ("flat", "grouped")
#: The key of a method's config section that holds per-problem overrides.
PER_VARIANT = "per_variant"


def _key(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


class Hparams:
    """Base of the method hyperparameter classes: range checks and the config path in errors."""

    def problems(self) -> list[str]:
        """Range problems, each ``key: what is wrong`` (empty when valid)."""
        return []

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ValueHparams(Hparams):
    """What ROME and MEMIT share: the optimisation of the new value (v*, z) at the lookup token."""

    v_num_grad_steps: int = _key(20, "forward passes of the v* optimisation (FF: 25 in the paper)")
    v_lr: float = _key(0.5, "Adam learning rate of the delta added at the lookup token")
    v_weight_decay: float = _key(0.5, "weight · ‖delta‖ / ‖v_init‖² (non-squared, ROME PR #4)")
    kl_factor: float = _key(0.0625, "weight of the essence KL term (paper EI: 1)")
    clamp_norm_factor: float = _key(4.0, "‖delta‖ ≤ factor · ‖v_init‖ after every step")
    early_stop_loss: float | None = _key(0.05, "stop when loss < this (ROME upstream); None: never")
    fact_token: str = _key("subject_last", f"lookup token, one of {FACT_TOKENS}")
    key_average: str = _key("flat", f"key averaging over context templates, one of {KEY_AVERAGES}")

    def problems(self) -> list[str]:
        out = []
        if self.fact_token not in FACT_TOKENS:
            out.append(f"fact_token: must be one of {list(FACT_TOKENS)}, got {self.fact_token!r}")
        if self.key_average not in KEY_AVERAGES:
            out.append(f"key_average: must be one of {list(KEY_AVERAGES)}, got {self.key_average!r}")
        if int(self.v_num_grad_steps) < 1:
            out.append(f"v_num_grad_steps: must be >= 1, got {self.v_num_grad_steps}")
        if float(self.v_lr) <= 0 or float(self.clamp_norm_factor) <= 0:
            out.append("v_lr and clamp_norm_factor: must be > 0")
        return out


@dataclass(frozen=True)
class ROMEHparams(ValueHparams):
    """ROME (Meng et al. 2022): one layer, rank-one update through C⁻¹ (paper-spec §6.1, §6.5)."""

    mom2_adjustment: bool = _key(True, "u = C⁻¹k*; False: u = k* (EasyEdit's default, not the paper's)")


@dataclass(frozen=True)
class MEMITHparams(ValueHparams):
    """MEMIT (Meng et al. 2023): a window of layers, residual spread over it (paper-spec §6.2)."""

    window: int = _key(5, "layers edited, centred on the edit layer (the paper: 5)")
    v_num_grad_steps: int = _key(25, "forward passes of the z optimisation (GPT2-XL: 20)")
    kl_factor: float = _key(0.0625, "weight of the essence KL term (paper EI: 0.9)")
    clamp_norm_factor: float = _key(0.75, "‖delta‖ ≤ factor · ‖h_L‖ (residual norm)")
    mom2_update_weight: float = _key(15000.0, "λ multiplying C (GPT2-XL: 20000)")
    key_average: str = _key("grouped", "MEMIT compute_ks: bare and prefixed prompts weigh 1/2 each")

    def problems(self) -> list[str]:
        out = super().problems()
        if int(self.window) < 1:
            out.append(f"window: must be >= 1, got {self.window}")
        return out


@dataclass(frozen=True)
class FTHparams(Hparams):
    """Constrained finetuning of down-projections (Zhu et al. 2020; the paper's FT-1 / FT-5)."""

    window: int = _key(1, "layers finetuned, centred on the edit layer (fixed by the method's name)")
    lr: float = _key(5e-4, "Adam learning rate")
    weight_decay: float = _key(0.0, "Adam weight decay")
    num_steps: int = _key(25, "optimisation steps (fact forcing: 50)")
    norm_constraint: float = _key(1e-4, "L∞ radius ε around the original weights, after every step")
    stop_loss: float = _key(1e-2, "stop once the loss (NLL; p(o_true) for erasure) is below this")
    num_noise_samples: int = _key(1, "fact forcing: noised copies of the rewrite prompt per step")
    train_bias: bool = _key(True, "also train the down-projection bias (the authors' code does)")

    def problems(self) -> list[str]:
        out = []
        if int(self.window) < 1:
            out.append(f"window: must be >= 1, got {self.window}")
        if int(self.num_noise_samples) < 1:
            out.append(f"num_noise_samples: must be >= 1, got {self.num_noise_samples}")
        if float(self.norm_constraint) < 0 or int(self.num_steps) < 0:
            out.append("norm_constraint and num_steps: must be >= 0")
        return out


H = TypeVar("H", bound=Hparams)


def merge_variant(section: Mapping | None, variant: str | None) -> dict:
    """``section`` without ``per_variant``, overlaid with ``per_variant.<variant>``: the only
    place the override is merged (the workflow, the API and the tests all go through here)."""
    section = dict(section or {})
    per_variant = section.pop(PER_VARIANT, None) or {}
    return {**section, **(per_variant.get(variant) or {})} if variant else section


def resolve(
    cls: type[H], hparams: Mapping | Hparams | None, where: str, fixed: Mapping | None = None
) -> H:
    """``hparams`` (a config section, already merged, or an instance) as a checked ``cls``.

    Args:
        where: the config path for messages (``editing.methods.rome``).
        fixed: keys the method's name fixes (FT-5's window); a config value that contradicts one
            is an error, never silently overridden.
    Raises:
        ValueError: an unknown key, a contradicted fixed key or a value out of range, naming
            ``where``.
    """
    if isinstance(hparams, cls):
        values = hparams.as_dict()
    elif isinstance(hparams, Hparams):
        raise ValueError(f"{where}: expected {cls.__name__}, got {type(hparams).__name__}")
    else:
        values = dict(hparams or {})
        values.pop(PER_VARIANT, None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown}; valid keys: {sorted(known)}")
    for key, value in (fixed or {}).items():
        if key in values and values[key] != value:
            raise ValueError(f"{where}.{key}: fixed to {value!r} by the method, got {values[key]!r}")
        values[key] = value
    hp = cls(**values)
    problems = hp.problems()
    if problems:
        raise ValueError("; ".join(f"{where}.{p}" for p in problems))
    return hp


def documentation(cls: type[Hparams]) -> dict[str, tuple[Any, str]]:
    """``{key: (default, doc)}`` of ``cls``, in declaration order (for docs and schema tests)."""
    return {f.name: (f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)}
