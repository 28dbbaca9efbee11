"""ROME: rank-one model editing of one MLP down-projection (Meng et al. 2022, §3.1).

W_proj at layer l is read as a linear associative memory k → v. The edit inserts (k*, v*):

1. k* = mean over the context templates of the down-projection input at the subject's last token
   (:func:`locedit.editing.compute_kv.module_io_at_lookup`).
2. v* = argmin of NLL(target) over the context prompts + KL on "{subject} is a" + weight decay,
   optimised as a delta on the down-projection output (:func:`compute_kv.optimize_value`).
3. Ŵ = W + Λ uᵀ with u = C⁻¹k* / ‖C⁻¹k*‖ and Λ = (v* − W k_p) / (k_pᵀ u), where k_p and W k_p
   are the down-projection input/output at the bare rewrite prompt — the authors' code
   (``rome/compute_u.py``, ``compute_v.py``); Eq. 2 of the paper uses k* in both places. Hence
   Ŵ k_p = v* exactly (tested), and the update has rank one.

**r-ROME** (Gupta et al. 2024, "Rebuilding ROME") uses k* on both sides: Λ = (v* − W k*) / (k*ᵀ u),
so Ŵ k* = v* (tested). The authors' mismatch can make k_pᵀ u tiny and the update huge (model
collapse, mostly for subjects at the first token); v* and u are ROME's, from the same settings.

Hyperparameters: :class:`locedit.editing.hparams.ROMEHparams` (the authors' GPT-J code values).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import edit_weight, module_for
from locedit.editing.compute_kv import average_keys, fill_template, module_io_at_lookup, optimize_value
from locedit.editing.covariance import CovarianceStore
from locedit.editing.engine import DEFAULT_MAX_FACTS, DEFAULT_ROW_BUDGET, optimize_values
from locedit.editing.hparams import ROMEHparams, resolve
from locedit.editing.types import EditRequest, Snapshot, add_update

logger = logging.getLogger(__name__)

#: The vectors of a ROME edit that r-ROME's update needs besides the model (u, k*, v*).
REPLAYED = ("u", "k_star", "v_star")


def rome_update(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    layer: int,
    hp: ROMEHparams,
    stats: CovarianceStore | None,
    context_templates: Sequence[str],
    *,
    consistent_key: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Compute ROME's rank-one update without applying it (the per-fact path); with
    ``consistent_key``, r-ROME's (k* in place of the bare prompt's key).

    Returns:
        ``(vectors, diagnostics)``; vectors (float32): ``u [d_mlp]`` (unit left vector),
        ``right [d_model]``, ``k_star [d_mlp]``, ``k_prompt [d_mlp]``, ``v_star [d_model]``,
        ``out_prompt [d_model]`` (the unedited output at the bare prompt); the update is
        ``right ⊗ u`` in Linear orientation ``[d_model, d_mlp]``.
    """
    t0 = time.perf_counter()
    templates = [fill_template(c, request.prompt) for c in context_templates]
    keys, _ = module_io_at_lookup(model, tok, request, templates, layer, fact_token=hp.fact_token)
    value = optimize_value(model, tok, request, context_templates, layer, component="mlp_out", hp=hp)
    k_p = out_p = None  # r-ROME never reads the bare prompt's key: no pass for it
    if not consistent_key:
        k_ps, out_ps = module_io_at_lookup(
            model, tok, request, [request.prompt], layer, fact_token=hp.fact_token
        )
        k_p, out_p = k_ps[0], out_ps[0]
    return _solve(model, layer, hp, stats, context_templates, keys, value, k_p, out_p,
                  time.perf_counter() - t0, consistent_key)


def rome_updates(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    layer: int,
    hp: ROMEHparams,
    stats: CovarianceStore | None,
    context_templates: Sequence[str],
    *,
    row_budget: int = DEFAULT_ROW_BUDGET,
    max_facts: int = DEFAULT_MAX_FACTS,
    consistent_key: bool = False,
) -> list[tuple[dict[str, torch.Tensor], dict]]:
    """:func:`rome_update` of every request through the batched engine (:mod:`~.engine`).

    The keys k* and the bare prompt's key and output come from the engine's prefix pass (the
    same prompts; the bare prompt is the first context template ``"{}"``). ``opt_seconds`` is
    each fact's share of the batched optimisation.
    """
    t0 = time.perf_counter()
    values = optimize_values(
        model, tok, requests, context_templates, layer, component="mlp_out", hp=hp,
        row_budget=row_budget, max_facts=max_facts,
    )  # fmt: skip
    share = (time.perf_counter() - t0) / max(len(requests), 1)
    out = []
    for request, value in zip(requests, values):
        t1 = time.perf_counter()
        if consistent_key:  # r-ROME: _solve takes k* instead
            k_p = out_p = None
        elif context_templates[0] == "{}":
            k_p, out_p = value.lookup_in[0], value.lookup_out[0]
        else:
            k_ps, out_ps = module_io_at_lookup(
                model, tok, request, [request.prompt], layer, fact_token=hp.fact_token
            )
            k_p, out_p = k_ps[0], out_ps[0]
        spent = share + time.perf_counter() - t1
        out.append(_solve(model, layer, hp, stats, context_templates, value.lookup_in, value, k_p,
                          out_p, spent, consistent_key))
    return out


def _solve(model, layer, hp, stats, context_templates, keys, value, k_p, out_p, opt_seconds,
           consistent_key=False):
    """u = C⁻¹k*/‖C⁻¹k*‖ and right = (v* − W k_p) / (k_pᵀ u) from the optimised value; with
    ``consistent_key`` (r-ROME; ``k_p``, ``out_p`` None) k_p := k* and W k_p := the
    down-projection's output at k*."""
    k_star = average_keys(keys, context_templates, hp.key_average)  # [d_mlp]
    t1 = time.perf_counter()
    if consistent_key:
        k_p, out_p = k_star, _down_projection(model, layer, k_star)
    if hp.mom2_adjustment:
        if stats is None:
            raise ValueError("ROME with mom2_adjustment needs covariance statistics")
        u = stats.inv_times(layer, k_star).to(k_star.device)
    else:
        u = k_star.clone()
    u = u / u.norm()
    right, solved = _right_vector(u, k_p, out_p, value.target)
    diag = dict(value.diagnostics)
    diag.update({"opt_seconds": opt_seconds, "solve_seconds": time.perf_counter() - t1, **solved})
    vectors = {
        "u": u, "right": right, "k_star": k_star, "k_prompt": k_p,
        "v_star": value.target, "out_prompt": out_p,
    }  # fmt: skip
    return vectors, diag


def _right_vector(u: torch.Tensor, k_p: torch.Tensor, out_p: torch.Tensor, v_star: torch.Tensor):
    """``right = (v* − W k_p) / (k_pᵀ u)`` ``[d_model]`` (``out_p`` = W k_p) and its diagnostics:
    the one solve ROME, r-ROME and r-ROME's replay share."""
    denom = torch.dot(k_p, u)
    right = (v_star - out_p) / denom
    diag = {
        "key_dot_u": float(denom),
        "right_norm": float(right.norm()),
        "residual_norm": float((v_star - out_p).norm()),
    }
    return right, diag


@torch.no_grad()
def _down_projection(model: nn.Module, layer: int, key: torch.Tensor) -> torch.Tensor:
    """The unedited down-projection's output ``[d_model]`` (bias included) at input ``key``."""
    module = module_for(model, "mlp_out", layer)
    w = edit_weight(model, layer)
    return module(key.to(w.device, w.dtype)[None])[0].to(key.dtype)


def _write(model: nn.Module, layer: int, vectors: dict, diag: dict) -> tuple[Snapshot, dict]:
    """Apply ``right ⊗ u`` at ``layer``; returns the snapshot and the finished diagnostics."""
    snapshot = Snapshot()
    t0 = time.perf_counter()
    delta = torch.outer(vectors["right"], vectors["u"])  # [d_model, d_mlp]
    add_update(model, layer, delta, snapshot)
    diag["update_seconds"] = diag.pop("solve_seconds") + time.perf_counter() - t0
    diag["update_norm"] = float(vectors["right"].norm())  # ‖right ⊗ u‖_F with ‖u‖ = 1
    diag["edited_layers"] = str(int(layer))
    # what r-ROME's jobs replay (locedit.editing.vectors); the driver exports it when asked
    diag["vectors"] = {name: vectors[name] for name in REPLAYED}
    return snapshot, diag


def edit_rome_batch(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    layer: int,
    hparams: ROMEHparams | dict | None,
    stats: CovarianceStore | None,
    context_templates: Sequence[str],
    *,
    row_budget: int = DEFAULT_ROW_BUDGET,
    max_facts: int = DEFAULT_MAX_FACTS,
    consistent_key: bool = False,
) -> Iterator[tuple[Snapshot, dict]]:
    """ROME edits of ``requests`` one at a time, their v* optimised together by the engine.

    Yields ``(snapshot, diagnostics)`` with the edit applied; the caller restores the snapshot
    before asking for the next one (every update is computed on the unedited model).
    """
    hp = resolve(ROMEHparams, hparams, "editing.methods.rome")
    for vectors, diag in rome_updates(
        model, tok, requests, layer, hp, stats, context_templates,
        row_budget=row_budget, max_facts=max_facts, consistent_key=consistent_key,
    ):  # fmt: skip
        yield _write(model, layer, vectors, diag)


def apply_rome(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    layer: int,
    hparams: ROMEHparams | dict | None,
    stats: CovarianceStore | None,
    context_templates: Sequence[str],
    *,
    consistent_key: bool = False,
) -> tuple[Snapshot, dict]:
    """Edit ``model`` in place with ROME at ``layer`` (r-ROME's update with ``consistent_key``).

    Args:
        request: the edit (target, erasure via ``minimize``, fact forcing via ``noise``).
        hparams: ``editing.methods.rome`` (merged with the variant's overrides) or its typed
            form; missing keys take the :class:`~locedit.editing.hparams.ROMEHparams` defaults.
        stats: C per layer (needed unless ``mom2_adjustment`` is false).
        context_templates: the ``rome`` list of ``context_templates.json``; first ``"{}"``.

    Returns:
        ``(snapshot, diagnostics)``: restore the weights with
        :func:`locedit.editing.types.restore`. Diagnostics are floats/ints: ``opt_seconds``
        (k*, v* and the bare-prompt pass), ``update_seconds`` (C⁻¹k* solve + weight write),
        ``loss``/``nll``/``kl``/``weight_decay`` of the last v* step, ``p_target_init`` /
        ``p_target`` (mean target probability over the context prompts, before / at the last
        step), ``p_target_prompt`` (the bare prompt's target probability at the last step),
        ``n_forward``, ``delta_norm``, ``init_norm``, ``update_norm`` (Frobenius).
    """
    hp = resolve(ROMEHparams, hparams, "editing.methods.rome")
    vectors, diag = rome_update(
        model, tok, request, layer, hp, stats, context_templates, consistent_key=consistent_key
    )
    return _write(model, layer, vectors, diag)


def apply_r_rome(model, tok, request, layer, hparams, stats, context_templates):
    """r-ROME: :func:`apply_rome` with k* in the update's denominator and residual."""
    return apply_rome(model, tok, request, layer, hparams, stats, context_templates, consistent_key=True)


def edit_r_rome_batch(model, tok, requests, layer, hparams, stats, context_templates, **engine):
    """r-ROME through the batched engine (:func:`edit_rome_batch` with ``consistent_key``)."""
    yield from edit_rome_batch(
        model, tok, requests, layer, hparams, stats, context_templates, consistent_key=True, **engine
    )


def replay_r_rome(model: nn.Module, layer: int, vectors: dict[str, torch.Tensor],
                  opt_seconds: float) -> tuple[Snapshot, dict]:
    """r-ROME's edit from ROME's exported ``u [d_mlp]``, ``k_star [d_mlp]``, ``v_star [d_model]``
    (:mod:`locedit.editing.vectors`): :func:`_solve`'s r-ROME arithmetic on them, so the
    result equals r-ROME optimising the same v* itself. ``opt_seconds``: ROME's optimisation
    time of this fact, reported as the edit's (its v* cost whoever computes it)."""
    t0 = time.perf_counter()
    w = edit_weight(model, layer)
    u, k_star, v_star = (vectors[n].to(w.device) for n in REPLAYED)
    right, solved = _right_vector(u, k_star, _down_projection(model, layer, k_star), v_star)
    diag = {"opt_seconds": float(opt_seconds), "solve_seconds": time.perf_counter() - t0, **solved}
    replayed = {"u": u, "right": right, "k_star": k_star, "v_star": v_star}
    snapshot, diag = _write(model, layer, replayed, diag)
    del diag["vectors"]  # r-ROME's own edits are not replayed further
    return snapshot, diag
