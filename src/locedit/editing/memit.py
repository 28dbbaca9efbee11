"""MEMIT for one fact: ROME's key-value insertion spread over a window of layers (Meng et al. 2023).

Following the authors' ``memit_main.execute_memit`` / ``compute_z`` (reference-implementations §3):

1. The window is centred on the edit layer and clipped like tracing windows,
   ``[l - w//2, l + ceil(w/2))`` ∩ ``[0, n_layers)`` (paper-spec §3.6, §6).
2. z = the residual stream (block output) at the window's *last* layer L at the subject's last
   token of the bare prompt, plus a delta optimised like ROME's v* (NLL over the context prompts +
   KL + weight decay, clamp relative to the residual norm).
3. For each layer l of the window in order, under the weights already edited at earlier layers:
   k = keys at l averaged over the context templates (MEMIT weighs bare and prefixed prompts
   equally), r = (z − h_L) / (number of remaining layers), ΔW_l = r ⊗ (λC + k kᵀ)⁻¹k.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import n_layers
from locedit.editing.compute_kv import (
    average_keys,
    fill_template,
    lookup_reads,
    module_io_at_lookup,
    optimize_value,
)
from locedit.editing.covariance import CovarianceStore
from locedit.editing.engine import DEFAULT_MAX_FACTS, DEFAULT_ROW_BUDGET, optimize_values
from locedit.editing.hparams import MEMITHparams, resolve
from locedit.editing.types import EditRequest, Snapshot, add_update
from locedit.layer_windows import edit_window



def apply_memit(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    layer: int,
    hparams: MEMITHparams | dict | None,
    stats: CovarianceStore,
    context_templates: Sequence[str],
) -> tuple[Snapshot, dict]:
    """Edit ``model`` in place with MEMIT over the window centred on ``layer``.

    Args:
        hparams: ``editing.methods.memit`` (merged with the variant's overrides) or its typed
            form; missing keys take the :class:`~locedit.editing.hparams.MEMITHparams` defaults.
        stats: C for every layer of the window.
        context_templates: the ``memit`` list of ``context_templates.json``; first ``"{}"``.

    Returns:
        ``(snapshot, diagnostics)`` as :func:`locedit.editing.rome.apply_rome`, plus
        ``edited_layers`` (comma-separated) and ``z_layer``.
    """
    hp = resolve(MEMITHparams, hparams, "editing.methods.memit")
    layers = edit_window(layer, int(hp.window), n_layers(model))
    t0 = time.perf_counter()
    z = optimize_value(model, tok, request, context_templates, layers[-1], component="block", hp=hp)
    return _spread(model, tok, request, layers, z, hp, stats, context_templates, time.perf_counter() - t0)


def edit_memit_batch(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    layer: int,
    hparams: MEMITHparams | dict | None,
    stats: CovarianceStore,
    context_templates: Sequence[str],
    *,
    row_budget: int = DEFAULT_ROW_BUDGET,
    max_facts: int = DEFAULT_MAX_FACTS,
) -> Iterator[tuple[Snapshot, dict]]:
    """MEMIT edits of ``requests`` one at a time, their z optimised together by the engine.

    Yields ``(snapshot, diagnostics)`` with the edit applied; the caller restores the snapshot
    before asking for the next one. ``opt_seconds`` includes each fact's share of the batch.
    """
    hp = resolve(MEMITHparams, hparams, "editing.methods.memit")
    layers = edit_window(layer, int(hp.window), n_layers(model))
    t0 = time.perf_counter()
    zs = optimize_values(
        model, tok, requests, context_templates, layers[-1], component="block", hp=hp,
        row_budget=row_budget, max_facts=max_facts,
    )  # fmt: skip
    share = (time.perf_counter() - t0) / max(len(requests), 1)
    for request, z in zip(requests, zs):
        yield _spread(model, tok, request, layers, z, hp, stats, context_templates, share, fused=True)


def _spread(model, tok, request, layers, z, hp, stats, context_templates, t_opt, fused=False):
    """Spread z − h_L over ``layers`` in order (step 3 of the module docstring); edits in place.

    ``fused``: read each layer's keys and h_L from one pass that stops at the z layer (the bare
    prompt is the first context template ``"{}"``), instead of the authors' two full passes.
    """
    z_layer = layers[-1]
    fact_token = hp.fact_token
    snapshot = Snapshot()
    templates = [fill_template(c, request.prompt) for c in context_templates]
    t_upd = 0.0
    update_sq = 0.0
    for i, l in enumerate(layers):
        t1 = time.perf_counter()
        if fused and context_templates[0] == "{}":
            got = lookup_reads(
                model, tok, request, templates, [("mlp_out", l), ("block", z_layer)], fact_token=fact_token
            )
            keys, h = got[("mlp_out", l)][0], got[("block", z_layer)][1][:1]
        else:
            keys, _ = module_io_at_lookup(model, tok, request, templates, l, fact_token=fact_token)
            _, h = module_io_at_lookup(
                model, tok, request, [request.prompt], z_layer, component="block", fact_token=fact_token
            )
        k = average_keys(keys, context_templates, hp.key_average)  # [d_mlp]
        resid = (z.target - h[0]) / (len(layers) - i)  # [d_model]
        t2 = time.perf_counter()
        adj_k = stats.memit_solve(l, float(hp.mom2_update_weight), k[:, None])[:, 0]
        delta = torch.outer(resid, adj_k.to(resid.device))  # [d_model, d_mlp]
        add_update(model, l, delta, snapshot)
        update_sq += float(delta.norm()) ** 2
        t_opt += t2 - t1
        t_upd += time.perf_counter() - t2
    diag = dict(z.diagnostics)
    diag.update(
        {
            "opt_seconds": t_opt,
            "update_seconds": t_upd,
            "update_norm": update_sq**0.5,
            "edited_layers": ",".join(str(l) for l in layers),
            "z_layer": int(z_layer),
        }
    )
    return snapshot, diag
