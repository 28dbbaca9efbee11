"""Constrained finetuning (FT-1 / FT-5, paper §5.2; Zhu et al.; the authors' ``ft_main.py``).

Adam on the MLP down-projection (weight and bias) of the layers in a window centred on the edit
layer (clipped like tracing windows), projected after every step into the L∞ ball of radius ε
around the original weights. The loss is ``-log p(y | prompt)`` on the rewrite prompt only, or
``p(y | prompt)`` itself for fact erasure (the authors minimise the probability, not its log).
Optimisation stops as soon as the loss falls below ``stop_loss`` (the authors take no step
below 1e-2 and stop after 5 such epochs; with one request and unchanged weights that is the
same).

Fact forcing: the rewrite prompt is repeated ``num_noise_samples`` times; row 0 carries the
request's fixed noise (the input the edit is evaluated on) and the other rows fresh draws of the
same σ (estimated from that noise) per step, from a generator seeded by the case, like the
authors' 10 noised copies.
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedTokenizerBase

from locedit.adapters import edit_weight, module_for, n_layers
from locedit.editing.types import EditRequest, Snapshot, restore
from locedit.hooks import forward_hooks
from locedit.records import subject_token_range
from locedit.scoring import gather_target_logprobs, make_batch

#: Defaults of the authors' code (GPT-J); ``config.yaml`` overrides them per variant.
DEFAULTS = {
    "window": 1,
    "lr": 5e-4,
    "weight_decay": 0.0,
    "num_steps": 25,
    "norm_constraint": 1e-4,
    "stop_loss": 1e-2,
    "num_noise_samples": 1,
    "train_bias": True,
}


def window_layers(center: int, window: int, total: int) -> list[int]:
    """Layers ``[max(0, c - w//2), min(L, c + ceil(w/2)))`` (paper-spec §3.6, same as tracing)."""
    if not 0 <= center < total:
        raise ValueError(f"edit layer {center} outside [0, {total})")
    if window < 1:
        raise ValueError(f"edit window must be ≥ 1, got {window}")
    return list(range(max(0, center - window // 2), min(total, center - (-window // 2))))


def _trainable(model: torch.nn.Module, layers: list[int], train_bias: bool) -> list[torch.nn.Parameter]:
    params = []
    for layer in layers:
        params.append(edit_weight(model, layer))
        bias = getattr(module_for(model, "mlp_out", layer), "bias", None)
        if train_bias and bias is not None:
            params.append(bias)
    return params


def _row_noise_hook(spans: list[tuple[int, int]], noises: list[torch.Tensor]):
    """Forward hook on the embedding adding ``noises[i]`` at ``spans[i]`` of row ``i``."""

    def hook(module, inputs, output):  # output: [batch, pos, d_model]
        if output.shape[0] != len(spans):
            return output
        add = torch.zeros_like(output)
        for row, ((start, end), noise) in enumerate(zip(spans, noises)):
            add[row, start:end] = noise[: end - start].to(output.device, output.dtype)
        return output + add

    return hook


def apply_ft(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    layer: int,
    hparams: dict,
    stats=None,
    context_templates: list[str] | None = None,
) -> tuple[Snapshot, dict]:
    """Finetune the down-projections of the window around ``layer`` towards ``request``.

    Args:
        layer: central layer (0-indexed); ``hparams['window']`` layers around it are trained.
        hparams: keys of :data:`DEFAULTS` (``norm_constraint`` is ε).
        stats, context_templates: unused (same signature as ROME/MEMIT).

    Returns:
        ``(snapshot of the original weights, info)``; info holds ``layers``, ``steps``,
        ``final_loss``, ``opt_seconds`` (forward/backward/Adam) and ``update_seconds``
        (the L∞ projections).
    """
    hp = {**DEFAULTS, **hparams}
    unknown = set(hparams) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown FT hyperparameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    layers = window_layers(layer, int(hp["window"]), n_layers(model))
    params = _trainable(model, layers, bool(hp["train_bias"]))
    snapshot = Snapshot()
    for p in params:
        snapshot.save(model, p)
    originals = [snapshot.weights[k] for k in snapshot.weights]  # same order as params
    eps = float(hp["norm_constraint"])

    device = next(model.parameters()).device
    n_rep = int(hp["num_noise_samples"]) if request.noise is not None else 1
    text = request.prompt.format(request.subject)
    batch = make_batch(tok, [text] * n_rep, [request.target] * n_rep, device)
    hooks = []
    gen = None
    if request.noise is not None:
        span = subject_token_range(tok, request.prompt, request.subject)
        sigma = float(request.noise.std())
        gen = torch.Generator().manual_seed(int(request.case_id))

    # Half-precision models (GPT-J in float16) train float32 master copies: Adam's state and an
    # L∞ radius of 1e-5 are below float16 resolution; the model weights get the rounded masters.
    mixed = any(p.dtype != torch.float32 for p in params)
    masters = [p.detach().float().clone() for p in params] if mixed else params
    centers = [w0.float() for w0 in originals] if mixed else originals
    opt = torch.optim.Adam(masters, lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    t_opt = t_upd = 0.0
    loss_val, steps = float("nan"), 0
    for p in params:
        p.requires_grad_(True)
    try:
        for _ in range(int(hp["num_steps"])):
            t0 = time.perf_counter()
            if request.noise is not None:
                noises = [request.noise] + [
                    torch.randn(request.noise.shape, generator=gen) * sigma for _ in range(n_rep - 1)
                ]
                hooks = [(module_for(model, "embed"), _row_noise_hook([span] * n_rep, noises))]
            with forward_hooks(hooks):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            logp = gather_target_logprobs(logits, batch)  # [n_rep]
            loss = torch.exp(logp).mean() if request.minimize else -logp.mean()
            loss_val = float(loss.detach())
            if loss_val < float(hp["stop_loss"]):
                t_opt += time.perf_counter() - t0
                break
            opt.zero_grad(set_to_none=True)
            for p in params:
                p.grad = None
            loss.backward()
            if mixed:
                for m, p in zip(masters, params):
                    m.grad = p.grad.float()
            opt.step()
            steps += 1
            t1 = time.perf_counter()
            with torch.no_grad():
                for m, p, w0 in zip(masters, params, centers):
                    m.copy_(torch.clamp(m, w0 - eps, w0 + eps))
                    if mixed:
                        p.copy_(m.to(p.dtype))
            t2 = time.perf_counter()
            t_opt += t1 - t0
            t_upd += t2 - t1
    except BaseException:
        restore(model, snapshot)  # never leave a half-finetuned model behind
        raise
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    info = {
        "layers": layers,
        "steps": steps,
        "final_loss": loss_val,
        "opt_seconds": t_opt,
        "update_seconds": t_upd,
    }
    return snapshot, info
