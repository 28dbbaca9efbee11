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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from locedit.adapters import edit_weight, is_conv1d, module_for, n_layers, untuple
from locedit.editing.hparams import FTHparams, resolve
from locedit.editing.types import EditRequest, Snapshot, restore
from locedit.hooks import forward_hooks
from locedit.noise import row_noise_hook
from locedit.seeds import ft_noise_seed
from locedit.kernels import fused_activations
from locedit.layer_windows import edit_window
from locedit.data.records import subject_token_range
from locedit.scoring import encode_prompt_target, gather_target_logprobs, make_batch, right_pad
from locedit.tracing.passes import (
    SuffixArgs,
    _pre_hooks_with_kwargs,
    _StopForward,
    record_row_suffix_args,
)

#: Facts finetuned together in one batched pass by default (each keeps a weight delta and Adam
#: state per edited layer, so this is also the memory knob). More is faster on a CPU (toy, one
#: thread: 3.9x the per-fact path at 64, 3.3x at 16, 2.1x at 4). Same default as the schema.
DEFAULT_MAX_FACTS = 64


def _resolve(hparams: FTHparams | dict | None) -> FTHparams:
    """The typed hyperparameters (a dict's missing keys take the authors' code defaults)."""
    return resolve(FTHparams, hparams, "editing.methods.ft")


def _trainable(model: torch.nn.Module, layers: list[int], train_bias: bool) -> list[torch.nn.Parameter]:
    params = []
    for layer in layers:
        params.append(edit_weight(model, layer))
        bias = getattr(module_for(model, "mlp_out", layer), "bias", None)
        if train_bias and bias is not None:
            params.append(bias)
    return params


def apply_ft(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    layer: int,
    hparams: FTHparams | dict,
    stats=None,
    context_templates: list[str] | None = None,
) -> tuple[Snapshot, dict]:
    """Finetune the down-projections of the window around ``layer`` towards ``request``.

    Args:
        layer: central layer (0-indexed); ``hparams.window`` layers around it are trained.
        hparams: :class:`~locedit.editing.hparams.FTHparams` or its keys (``norm_constraint``
            is ε); the registry fixes ``window`` by the method's name (FT-1, FT-5).
        stats, context_templates: unused (same signature as ROME/MEMIT).

    Returns:
        ``(snapshot of the original weights, info)``; info holds ``layers``, ``steps``,
        ``final_loss``, ``opt_seconds`` (forward/backward/Adam) and ``update_seconds``
        (the L∞ projections).
    """
    hp = _resolve(hparams)
    layers = edit_window(layer, int(hp.window), n_layers(model))
    params = _trainable(model, layers, bool(hp.train_bias))
    snapshot = Snapshot()
    for p in params:
        snapshot.save(model, p)
    originals = [snapshot.weights[k] for k in snapshot.weights]  # same order as params
    eps = float(hp.norm_constraint)

    device = next(model.parameters()).device
    n_rep = int(hp.num_noise_samples) if request.noise is not None else 1
    text = request.prompt.format(request.subject)
    batch = make_batch(tok, [text] * n_rep, [request.target] * n_rep, device)
    hooks = []
    gen = None
    if request.noise is not None:
        span = subject_token_range(tok, request.prompt, request.subject)
        sigma = float(request.noise.std())
        gen = torch.Generator().manual_seed(ft_noise_seed(request.case_id))

    # Half-precision models (GPT-J in float16) train float32 master copies: Adam's state and an
    # L∞ radius of 1e-5 are below float16 resolution; the model weights get the rounded masters.
    mixed = any(p.dtype != torch.float32 for p in params)
    masters = [p.detach().float().clone() for p in params] if mixed else params
    centers = [w0.float() for w0 in originals] if mixed else originals
    opt = torch.optim.Adam(masters, lr=float(hp.lr), weight_decay=float(hp.weight_decay))
    t_opt = t_upd = 0.0
    loss_val, steps = float("nan"), 0
    for p in params:
        p.requires_grad_(True)
    try:
        for _ in range(int(hp.num_steps)):
            t0 = time.perf_counter()
            if request.noise is not None:
                noises = [request.noise] + [
                    torch.randn(request.noise.shape, generator=gen) * sigma for _ in range(n_rep - 1)
                ]
                hooks = [(module_for(model, "embed"), row_noise_hook([span] * n_rep, noises))]
            with forward_hooks(hooks):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            logp = gather_target_logprobs(logits, batch)  # [n_rep]
            loss = torch.exp(logp).mean() if request.minimize else -logp.mean()
            loss_val = float(loss.detach())
            if loss_val < float(hp.stop_loss):
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


# --------------------------------------------------------------------------------------------
# Batched engine: several facts per forward/backward, the frozen layers below computed once
# --------------------------------------------------------------------------------------------


def batchable(model: torch.nn.Module, hparams: FTHparams | dict) -> bool:
    """Whether :func:`edit_ft_batch` computes exactly what :func:`apply_ft` does.

    The engine trains each fact's *difference* D to the original weights. Adam's update does not
    depend on the parameter's value unless weight decay is on, and a float32 model adds D in
    float32 as the per-fact path's in-place update does; otherwise the per-fact path runs.
    """
    hp = _resolve(hparams)
    return float(hp.weight_decay) == 0.0 and next(model.parameters()).dtype == torch.float32


@dataclass
class _FtFact:
    index: int
    request: EditRequest
    rows: list[list[int]]  # token ids per row (n_rep copies of the rewrite prompt)
    reads: list[list[int]]  # target positions per row
    targets: list[list[int]]
    span: tuple[int, int] | None  # subject span (fact forcing)
    gen: torch.Generator | None
    sigma: float
    block_in: torch.Tensor | None = None  # [rows, width, d] input of the lowest edited block
    deltas: list[torch.Tensor] = field(default_factory=list)  # per trained parameter
    opt: torch.optim.Optimizer | None = None
    steps: int = 0
    t_upd: float = 0.0


def _ft_fact(index, request, tok, n_rep) -> _FtFact:
    p, t = encode_prompt_target(tok, request.prompt.format(request.subject), request.target)
    noised = request.noise is not None
    return _FtFact(
        index=index,
        request=request,
        rows=[p + t[:-1]] * n_rep,
        reads=[list(range(len(p) - 1, len(p) - 1 + len(t)))] * n_rep,
        targets=[t] * n_rep,
        span=subject_token_range(tok, request.prompt, request.subject) if noised else None,
        gen=torch.Generator().manual_seed(ft_noise_seed(request.case_id)) if noised else None,
        sigma=float(request.noise.std()) if noised else 0.0,
    )


def _draw_noises(fact: _FtFact) -> list[torch.Tensor] | None:
    """Row 0's fixed noise and fresh draws for the other rows, as :func:`apply_ft` draws them."""
    if fact.span is None:
        return None
    noise = fact.request.noise
    return [noise] + [torch.randn(noise.shape, generator=fact.gen) * fact.sigma for _ in fact.rows[1:]]


@torch.no_grad()
def _lower_pass(model, facts: list[_FtFact], low: int, noises, pad_id: int) -> list[torch.Tensor]:
    """Input of block ``low`` ``[rows, width, d]`` per fact (no grad: nothing below is trained)."""
    device = next(model.parameters()).device
    ids, mask = right_pad([r for f in facts for r in f.rows], pad_id)
    got = {}

    def stop(module, args, kwargs):
        got["h"] = args[0] if args else kwargs["hidden_states"]
        raise _StopForward

    hooks = []
    if noises is not None:
        spans = [f.span for f in facts for _ in f.rows]
        hooks = [(module_for(model, "embed"), row_noise_hook(spans, noises))]
    with forward_hooks(hooks), _pre_hooks_with_kwargs([(module_for(model, "block", low), stop)]):
        try:
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
        except _StopForward:
            pass
    out, r0 = [], 0
    for f in facts:
        out.append(got["h"][r0 : r0 + len(f.rows)])
        r0 += len(f.rows)
    return out


@dataclass
class _FtBatch:
    """What a replay of the active facts needs besides their hidden states: the recorded block
    arguments and the read positions. Rebuilt only when facts join or leave."""

    args: SuffixArgs
    read_row: torch.Tensor  # [n_read] row of every target token
    read_pos: torch.Tensor  # [n_read]
    read_tok: torch.Tensor  # [n_read]
    n_rows: int


def _ft_batch_layout(model, facts: list[_FtFact], low: int) -> _FtBatch:
    lengths = torch.tensor([len(r) for f in facts for r in f.rows])
    rr, pp, tt = [], [], []
    b = 0
    for f in facts:
        for pos, tgt in zip(f.reads, f.targets):
            rr += [b] * len(pos)
            pp += pos
            tt += tgt
            b += 1
    dev = next(model.parameters()).device
    return _FtBatch(
        args=record_row_suffix_args(model, torch.zeros_like(lengths), lengths, None, low),
        read_row=torch.tensor(rr, device=dev),
        read_pos=torch.tensor(pp, device=dev),
        read_tok=torch.tensor(tt, device=dev),
        n_rows=b,
    )


def _ft_step_loss(model, facts, layers, params, low, block_ins, batch: _FtBatch):
    """Per-fact losses ``[facts]`` of one forward from block ``low`` with each fact's deltas."""
    L, n_rep, n_facts = n_layers(model), len(facts[0].rows), len(facts)
    has_bias = len(params) == 2 * len(layers)  # [W, b] per layer, or W alone
    width = max(h.shape[1] for h in block_ins)
    h = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1])) for x in block_ins])

    def hook(k):  # k-th trained layer: weight delta (and bias delta) per fact
        def fn(module, inputs, output):
            x = inputs[0]  # [rows, width, d_in]
            d = torch.stack([f.deltas[2 * k if has_bias else k] for f in facts])  # [F, d_in, d_out]
            add = torch.bmm(x.reshape(n_facts, n_rep * x.shape[1], -1), d).view(*output.shape[:2], -1)
            if has_bias:
                b = torch.stack([f.deltas[2 * k + 1] for f in facts])  # [F, d_out]
                add = add + b.repeat_interleave(n_rep, 0)[:, None]
            return output + add

        return fn

    sa = batch.args
    with forward_hooks([(module_for(model, "mlp_out", l), hook(k)) for k, l in enumerate(layers)]):
        for j in range(low, L):
            h = untuple(module_for(model, "block", j)(h, *sa.args[j], **sa.kwargs[j]))
    sel = h[batch.read_row, batch.read_pos]  # [n_read, d]
    logits = module_for(model, "lm_head")(module_for(model, "final_norm")(sel))
    tok_lp = torch.log_softmax(logits.float(), -1).gather(1, batch.read_tok[:, None])[:, 0]
    row_lp = torch.zeros(batch.n_rows, device=h.device).index_add(0, batch.read_row, tok_lp)
    row_lp = row_lp.view(n_facts, n_rep)  # [facts, copies]
    minimize = torch.tensor([f.request.minimize for f in facts], device=h.device)
    return torch.where(minimize, torch.exp(row_lp).mean(1), -row_lp.mean(1))


def edit_ft_batch(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    layer: int,
    hparams: FTHparams | dict,
    stats=None,
    context_templates=None,
    *,
    max_facts: int = DEFAULT_MAX_FACTS,
    row_budget: int | None = None,
) -> Iterator[tuple[Snapshot, dict]]:
    """FT edits of ``requests`` one at a time, finetuned together (``max_facts`` per pass;
    ``row_budget``, the ROME/MEMIT engine's knob, does not apply: one row per noised copy).

    Each fact trains its own differences to the original weights of the window (one Adam per
    fact, so the joint step equals :func:`apply_ft`'s), from the cached input of the lowest
    edited block (the blocks below are frozen), unembedding only the target positions; a fact
    that reaches ``stop_loss`` or ``num_steps`` leaves the batch and the next one joins. Yields
    ``(snapshot, info)`` with the fact's edit applied; the caller restores it before the next.
    Falls back to :func:`apply_ft` where the engine would not be exact (:func:`batchable`).
    """
    hp = _resolve(hparams)
    if not batchable(model, hparams):
        for r in requests:
            yield apply_ft(model, tok, r, layer, hparams)
        return
    layers = edit_window(layer, int(hp.window), n_layers(model))
    params = _trainable(model, layers, bool(hp.train_bias))
    low, eps, n_steps = layers[0], float(hp.norm_constraint), int(hp.num_steps)
    device = params[0].device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    conv = is_conv1d(model)
    # deltas in the x @ D orientation [d_in, d_out] (Conv1D stores weights that way)
    shapes = [tuple(p.shape) if (p.ndim == 1 or conv) else tuple(p.shape[::-1]) for p in params]
    pending = list(enumerate(requests))
    active: list[_FtFact] = []
    layout: _FtBatch | None = None
    busy, t0 = 0.0, time.perf_counter()  # the engine's own time (not the caller's, between yields)
    n_done = 0
    finished: list[tuple[_FtFact, float]] = []
    while pending or active:
        joined = []
        while pending and len(active) < max_facts:
            i, req = pending.pop(0)
            n_rep = int(hp.num_noise_samples) if req.noise is not None else 1
            f = _ft_fact(i, req, tok, n_rep)
            f.deltas = [torch.zeros(sh, device=device, requires_grad=True) for sh in shapes]
            f.opt = torch.optim.Adam(f.deltas, lr=float(hp.lr))
            active.append(f)
            joined.append(f)
            layout = None
        if len({len(f.rows) for f in active}) != 1:
            raise ValueError("facts of one FT batch must have the same number of noised copies")
        fresh = active[0].span is not None and len(active[0].rows) > 1
        if fresh:  # fresh noise every step: the frozen blocks run every step (no grad)
            noises = [n for f in active for n in _draw_noises(f)]
            block_ins = _lower_pass(model, active, low, noises, pad)
        else:
            for f in joined:
                f.block_in = _lower_pass(model, [f], low, _draw_noises(f), pad)[0]
            block_ins = [f.block_in for f in active]
        if layout is None:
            layout = _ft_batch_layout(model, active, low)
        with fused_activations(model):  # not across the yields below: evaluation swaps its own
            loss = _ft_step_loss(model, active, layers, params, low, block_ins, layout)
            values = loss.detach().tolist()
            going = [k for k, f in enumerate(active) if values[k] >= float(hp.stop_loss)]
            if going:
                loss[going].sum().backward()
        still = []
        for k, f in enumerate(active):
            if k in going:
                f.opt.step()
                f.opt.zero_grad(set_to_none=True)
                f.steps += 1
                t2 = time.perf_counter()
                with torch.no_grad():
                    for d in f.deltas:
                        d.clamp_(-eps, eps)
                f.t_upd += time.perf_counter() - t2
            if k in going and f.steps < n_steps:
                still.append(f)
            else:
                finished.append((f, values[k]))
        if len(still) < len(active):
            layout = None
        active = still
        # yield finished facts in request order as soon as all earlier ones are done
        finished.sort(key=lambda x: x[0].index)
        while finished and finished[0][0].index == n_done:
            f, final_loss = finished.pop(0)
            n_done += 1
            busy += time.perf_counter() - t0
            # opt_seconds: the fact's share of the engine's time so far (the work is shared)
            yield _apply_deltas(model, f, params, conv, layers, final_loss, busy / n_done)
            t0 = time.perf_counter()


@torch.no_grad()
def _apply_deltas(model, fact: _FtFact, params, conv: bool, layers, final_loss: float, opt_share: float):
    snapshot = Snapshot()
    for p, d in zip(params, fact.deltas):
        snapshot.save(model, p)
        p.add_(d.detach() if (p.ndim == 1 or conv) else d.detach().T)
    info = {
        "layers": layers,
        "steps": fact.steps,
        "final_loss": final_loss,
        "opt_seconds": opt_share,
        "update_seconds": fact.t_upd,
    }
    return snapshot, info
