"""The batched value engine: ROME's v* and MEMIT's z for many facts at once, computing only what
the optimised delta can change.

:func:`locedit.editing.compute_kv.optimize_value` (the per-fact path, the authors' algorithm) runs
the whole model over every context prompt at every step. The delta is added at one layer ``l``, at
each row's lookup token ``t_i``, so in every step

* everything below block ``l`` is unchanged, and so is every position before ``t_i`` at every
  layer (causal attention): one no-grad **prefix pass** per fact, under its subject noise, caches
  the input of block ``l`` and every layer's keys/values (plus the keys and the initial value at
  the lookups, which ROME's update needs anyway);
* each step **replays** only blocks ``l+1..L-1`` over positions ``t_i..`` of each row, attending
  to the row's cached prefix keys/values (the tracing engine's recorded-arguments machinery,
  :func:`locedit.trace_passes.record_row_suffix_args`, with one prefix length per row); block
  ``l`` itself is not replayed where the delta reaches its output unchanged
  (:func:`_delta_passes_through`): its output is the cached one plus the delta;
* only the positions that are read are unembedded (the target tokens and the KL token);
* ``transformers``' five-kernel tanh-GELU is swapped for PyTorch's fused one
  (:func:`locedit.kernels.fused_activations`; same formula, fused backward);
* rows of several facts share one pass (up to ``row_budget`` rows). Each fact keeps its own delta
  leaf and its own Adam (element-wise, so the joint step equals separate optimisers), its own step
  counter, early stopping and norm clamp; a finished fact leaves the batch and the next one joins.

Fact forcing's noise only touches the subject's tokens, at or before the lookup token, so it acts
in the prefix pass alone. Results equal the per-fact path up to float rounding (tested per
architecture and variant).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase

from locedit.adapters import module_for, n_layers, untuple
from locedit.editing.hparams import ValueHparams
from locedit.editing.compute_kv import (
    KL_PROMPT,
    ValueResult,
    _device,
    _pad_id,
    fill_template,
    lookup_index,
    pad_rows,
    subject_noise_ctx,
)
from locedit.editing.types import EditRequest
from locedit.hooks import forward_hooks
from locedit.kernels import fused_activations
from locedit.modeling import cache_kwargs
from locedit.scoring import encode_prompt, encode_prompt_target
from locedit.tracing.passes import SuffixArgs, _pre_hooks_with_kwargs, record_row_suffix_args

logger = logging.getLogger(__name__)

#: Rows (context prompts + KL prompt, over all facts) per replay pass by default: the fastest
#: on a CPU (toy model, one thread: 48 rows beat 12, 24 and 192-768; bench_edit_engine.py). On a
#: GPU more rows fill the device (the presets use 512). Same default as the config schema.
DEFAULT_ROW_BUDGET = 48
#: Facts per replay pass by default (ROME/MEMIT are bound by the row budget first).
DEFAULT_MAX_FACTS = 64


@dataclass
class _Fact:
    """One fact's cached prefix pass and optimisation state.

    Rows are the rewrite prompts (one per context template) then the KL prompt; ``offsets`` are
    their lookup tokens and ``lengths`` their token counts.
    """

    index: int
    request: EditRequest
    n_rw: int
    offsets: list[int]
    lengths: list[int]
    start: torch.Tensor  # [rows, width, d_model] where the replay starts (see ``first``)
    first: int  # first replayed block: l + 1 from block l's output, or l from its input
    start_in: torch.Tensor  # [rows, width, d_model] block l's input: a batch that replays block l
    keys: dict[int, torch.Tensor]  # layer >= l -> [rows, kv_heads, max offset, head_dim]
    values: dict[int, torch.Tensor]
    reads: list[tuple[int, int, int]]  # (row, position, token id) of every target token
    n_tgt: list[int]  # target tokens per rewrite row
    init: torch.Tensor  # [d] unedited module output at row 0's lookup
    lookup_in: torch.Tensor | None  # [rows, d_in] module input at the lookups
    lookup_out: torch.Tensor  # [rows, d_out] module output at the lookups
    delta: torch.Tensor = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    it: int = 0
    kl_init: torch.Tensor | None = None
    diag0: dict | None = None


def _rows(tok, request: EditRequest, context_templates: Sequence[str], fact_token: str):
    templates = [fill_template(c, request.prompt) for c in context_templates]
    rows, reads, n_tgt, lookup = [], [], [], []
    for i, t in enumerate(templates):
        p_ids, t_ids = encode_prompt_target(tok, t.format(request.subject), request.target)
        rows.append(p_ids + t_ids[:-1])
        reads += [(i, len(p_ids) - 1 + k, tid) for k, tid in enumerate(t_ids)]
        n_tgt.append(len(t_ids))
        lookup.append(lookup_index(tok, t, request.subject, fact_token))
    rows.append(encode_prompt(tok, KL_PROMPT.format(request.subject)))
    lookup.append(lookup_index(tok, KL_PROMPT, request.subject, fact_token))
    return templates + [KL_PROMPT], rows, reads, n_tgt, lookup


@torch.no_grad()
def _prefix_pass(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    index: int,
    request: EditRequest,
    context_templates: Sequence[str],
    layer: int,
    component: str,
    fact_token: str,
) -> _Fact:
    """One full no-grad pass over a fact's rows recording what every replay step reuses."""
    templates, rows, reads, n_tgt, lookup = _rows(tok, request, context_templates, fact_token)
    if any(pos < lookup[row] for row, pos, _ in reads):
        raise ValueError(f"case {request.case_id}: a target token is read before the lookup token")
    batch = pad_rows(rows, _pad_id(tok), _device(model))
    r_idx, l_idx = torch.arange(len(rows)), torch.tensor(lookup)
    got: dict = {}

    def pre(module, args, kwargs):
        got["block_in"] = (args[0] if args else kwargs["hidden_states"]).detach()

    def post(module, inputs, output):
        got["in"] = inputs[0][r_idx, l_idx].float() if inputs else None
        got["out"] = untuple(output)[r_idx, l_idx].float()

    def keep(name, rows=slice(None), pos=slice(None)):
        def fn(module, inputs, output):
            got[name] = untuple(output)[rows, pos].detach()

        return fn

    kv = DynamicCache(config=model.config)
    p_max = max(lookup)
    with subject_noise_ctx(model, tok, request, templates):
        hooks = [
            (module_for(model, component, layer), post),
            (module_for(model, "block", layer), keep("block")),
        ]
        # attention and MLP outputs only at the lookups, for _delta_passes_through
        hooks += [(module_for(model, c, layer), keep(c, r_idx, l_idx)) for c in ("attn", "mlp")]
        with (
            forward_hooks(hooks),
            _pre_hooks_with_kwargs([(module_for(model, "block", layer), pre)]),
        ):
            model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                use_cache=True,
                logits_to_keep=1,
                **cache_kwargs(model, kv),
            )
    L = n_layers(model)
    skip = component == "block" or _delta_passes_through(got, r_idx, l_idx)
    return _Fact(
        index=index,
        request=request,
        n_rw=len(rows) - 1,
        offsets=lookup,
        lengths=[len(r) for r in rows],
        start=got["block"] if skip else got["block_in"],
        first=layer + 1 if skip else layer,
        start_in=got["block_in"],
        keys={j: kv.layers[j].keys[:, :, :p_max] for j in range(layer, L)},
        values={j: kv.layers[j].values[:, :, :p_max] for j in range(layer, L)},
        reads=reads,
        n_tgt=n_tgt,
        init=got["out"][0].clone(),
        lookup_in=got["in"],
        lookup_out=got["out"],
    )


def _delta_passes_through(got: dict, rows: torch.Tensor, pos: torch.Tensor) -> bool:
    """Whether a delta on the down-projection's output reaches block l's output unchanged: the
    projection is the MLP's last operation and the block adds the MLP's output to its residual
    (out = in + attn + mlp, sequential or parallel). Then block l need not be replayed: its
    output is the cached one plus the delta at the lookup token. Checked on this pass's values
    at the lookups, so an architecture that normalises the MLP output first is replayed."""
    dtype = got["block"].dtype
    block, x = (got[k][rows, pos].float() for k in ("block", "block_in"))
    mlp, attn = got["mlp"].float(), got["attn"].float()
    if not torch.equal(mlp, got["out"]):
        return False
    # The block's sum is rounded in the model's precision: 1e-4 in float32, a few units of
    # rounding in float16 / bfloat16 (whose eps is 1e-3 / 8e-3), or the check never passes there.
    tol = max(1e-4, 8 * torch.finfo(dtype).eps)
    return torch.allclose(block, x + attn + mlp, rtol=tol, atol=tol * float(block.abs().max()))


@dataclass
class _Batch:
    """The active facts' rows laid out for one replay: row ``b`` holds positions ``offset..``."""

    first: int  # first replayed block (the edit layer's block itself, or the next one)
    hidden: torch.Tensor  # [rows, width, d_model] input of block ``first``
    keys: dict[int, torch.Tensor]  # layer -> [rows, kv_heads, prefix, head_dim]
    values: dict[int, torch.Tensor]
    args: SuffixArgs
    row_fact: torch.Tensor  # [rows] index into facts
    read_row: torch.Tensor  # [n_read] target reads, then one KL read per fact
    read_pos: torch.Tensor  # [n_read] (suffix positions)
    read_tok: torch.Tensor  # [n_tgt_reads]
    read_rw: torch.Tensor  # [n_tgt_reads] index of the rewrite row over all facts
    n_tgt: torch.Tensor  # [rewrite rows] float
    rw_fact: torch.Tensor  # [rewrite rows] index into facts
    n_rw: torch.Tensor  # [facts] float
    first_rw: list[int]  # index of each fact's bare-prompt row among the rewrite rows


def _assemble(model: nn.Module, facts: list[_Fact], layer: int) -> _Batch:
    offsets = torch.tensor([o for f in facts for o in f.offsets])
    lengths = torch.tensor([n for f in facts for n in f.lengths])
    width, prefix = int((lengths - offsets).max()), max(int(offsets.max()), 1)
    hidden, row_fact = [], []
    keys: dict[int, list] = {j: [] for j in facts[0].keys}
    values: dict[int, list] = {j: [] for j in facts[0].keys}
    read_row, read_pos, read_tok, read_rw, n_tgt, rw_fact, first_rw = [], [], [], [], [], [], []
    kl_rows = []  # the KL token is each fact's last row's lookup, suffix position 0
    b0 = rw0 = 0
    # Facts whose delta passes through block l start after it; if one of them does not, the
    # whole batch replays block l (exact either way), instead of failing the batch.
    first = facts[0].first if all(f.first == facts[0].first for f in facts) else layer
    for fi, f in enumerate(facts):
        start = f.start if f.first == first else f.start_in
        for r, (o, n) in enumerate(zip(f.offsets, f.lengths)):
            h = start[r, o:n]  # [n - o, d]
            hidden.append(F.pad(h, (0, 0, 0, width - h.shape[0])))
        for j in keys:
            k, v = f.keys[j], f.values[j]
            keys[j].append(F.pad(k, (0, 0, 0, prefix - k.shape[2])))
            values[j].append(F.pad(v, (0, 0, 0, prefix - v.shape[2])))
        row_fact += [fi] * len(f.offsets)
        for r, pos, t in f.reads:
            read_row.append(b0 + r)
            read_pos.append(pos - f.offsets[r])
            read_tok.append(t)
            read_rw.append(rw0 + r)
        n_tgt += f.n_tgt
        rw_fact += [fi] * f.n_rw
        first_rw.append(rw0)
        b0 += len(f.offsets)
        rw0 += f.n_rw
        kl_rows.append(b0 - 1)
    dev = facts[0].start.device
    keys_t = {j: torch.cat(ks) for j, ks in keys.items()}
    values_t = {j: torch.cat(vs) for j, vs in values.items()}
    shape = tuple(keys_t[min(keys_t)].shape)
    args = record_row_suffix_args(model, offsets, lengths, shape, min(first, n_layers(model) - 1))
    return _Batch(
        first=first,
        hidden=torch.stack(hidden),
        keys=keys_t,
        values=values_t,
        args=args,
        row_fact=torch.tensor(row_fact, device=dev),
        read_row=torch.tensor(read_row + kl_rows, device=dev),
        read_pos=torch.tensor(read_pos + [0] * len(facts), device=dev),
        read_tok=torch.tensor(read_tok, device=dev),
        read_rw=torch.tensor(read_rw, device=dev),
        n_tgt=torch.tensor(n_tgt, dtype=torch.float32, device=dev),
        rw_fact=torch.tensor(rw_fact, device=dev),
        n_rw=torch.tensor([f.n_rw for f in facts], dtype=torch.float32, device=dev),
        first_rw=first_rw,
    )


def _replay(model: nn.Module, batch: _Batch, deltas: torch.Tensor, layer: int, component: str):
    """Log-probabilities ``[n_read, vocab]`` at the batch's read positions with ``deltas``
    ``[facts, d]`` added at each row's lookup token (suffix position 0) of ``component``."""
    row_delta = deltas[batch.row_fact][:, None]  # [rows, 1, d]

    def plus_delta(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[:, :1] + row_delta.to(h.dtype), h[:, 1:]], dim=1)

    def add(module, inputs, output):
        h = plus_delta(untuple(output))
        return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

    h, sa = batch.hidden, batch.args
    hooks = []
    if batch.first == layer:  # replay block l with the delta on its module
        hooks = [(module_for(model, component, layer), add)]
    else:  # block l's cached output plus the delta (see _delta_passes_through)
        h = plus_delta(h)
    with forward_hooks(hooks):
        for j in range(batch.first, n_layers(model)):
            sa.cache.prefix = {j: (batch.keys[j], batch.values[j])}
            h = untuple(module_for(model, "block", j)(h, *sa.args[j], **sa.kwargs[j]))
    sa.cache.prefix = {}
    sel = h[batch.read_row, batch.read_pos]  # [n_read, d]
    logits = module_for(model, "lm_head")(module_for(model, "final_norm")(sel))
    return torch.log_softmax(logits.float(), dim=-1)


def _start(fact: _Fact, lr: float) -> _Fact:
    fact.delta = torch.zeros_like(fact.init, requires_grad=True)
    fact.opt = torch.optim.Adam([fact.delta], lr=lr)
    return fact


def optimize_values(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[EditRequest],
    context_templates: Sequence[str],
    layer: int,
    *,
    component: str,
    hp: ValueHparams,
    row_budget: int = DEFAULT_ROW_BUDGET,
    max_facts: int = DEFAULT_MAX_FACTS,
) -> list[ValueResult]:
    """:func:`locedit.editing.compute_kv.optimize_value` for every request, batched.

    Same arguments and semantics per request (``hp``: ``v_num_grad_steps, v_lr, v_weight_decay,
    kl_factor, clamp_norm_factor, early_stop_loss, fact_token``). ``row_budget`` bounds the rows
    of one replay pass (each fact has one row per context template plus the KL row; a fact never
    waits because of the budget: it runs alone if it needs more), ``max_facts`` its facts. The
    results also carry ``lookup_in`` / ``lookup_out``: the module's unedited input/output at
    every rewrite row's lookup token (ROME's keys; row 0 is the bare prompt's when the first
    template is ``"{}"``).
    """
    if component not in ("block", "mlp_out"):
        raise ValueError(f"values are optimised at block or mlp_out outputs, got {component!r}")
    with fused_activations(model):
        return _optimize(
            model, tok, requests, context_templates, layer, component, hp, row_budget, max_facts
        )


def _optimize(model, tok, requests, context_templates, layer, component, hp, row_budget, max_facts):
    n_steps, lr = int(hp.v_num_grad_steps), float(hp.v_lr)
    early, kl_factor = hp.early_stop_loss, float(hp.kl_factor)
    wd_factor, clamp = float(hp.v_weight_decay), float(hp.clamp_norm_factor)
    rows_per_fact = len(context_templates) + 1
    pending = list(enumerate(requests))
    results: list[ValueResult | None] = [None] * len(requests)
    active: list[_Fact] = []
    batch: _Batch | None = None
    while pending or active:
        while pending and (
            not active
            or (len(active) < max_facts and (len(active) + 1) * rows_per_fact <= row_budget)
        ):
            i, req = pending.pop(0)
            fact = _prefix_pass(model, tok, i, req, context_templates, layer, component, hp.fact_token)
            active.append(_start(fact, lr))
            batch = None
        if batch is None:
            batch = _assemble(model, active, layer)
        deltas = torch.stack([f.delta for f in active])  # [facts, d]
        logp = _replay(model, batch, deltas, layer, component)
        n_t = len(batch.read_tok)
        tok_lp = logp[:n_t].gather(1, batch.read_tok[:, None])[:, 0]  # [n target tokens]
        nll_rows = -torch.zeros_like(batch.n_tgt).index_add(0, batch.read_rw, tok_lp) / batch.n_tgt
        nll = torch.zeros_like(batch.n_rw).index_add(0, batch.rw_fact, nll_rows) / batch.n_rw
        kl_lp = logp[n_t:]  # [facts, vocab]
        for fi, f in enumerate(active):
            if f.kl_init is None:
                f.kl_init = kl_lp[fi].detach().clone()
        kl_init = torch.stack([f.kl_init for f in active])
        kl = kl_factor * F.kl_div(kl_init, kl_lp, log_target=True, reduction="none").sum(-1)
        init_norm = torch.stack([f.init.norm() for f in active])
        wd = wd_factor * (deltas.norm(dim=1) / init_norm**2)
        minimize = torch.tensor([f.request.minimize for f in active], device=nll.device)
        loss = torch.where(minimize, torch.exp(-nll), nll) + kl + wd  # [facts]
        p_rows = torch.exp(-nll_rows.detach())
        p_target = torch.zeros_like(batch.n_rw).index_add(0, batch.rw_fact, p_rows) / batch.n_rw
        cols = {
            "loss": loss, "nll": nll, "kl": kl, "weight_decay": wd,
            "p_target": p_target, "p_target_prompt": p_rows[batch.first_rw],
        }  # fmt: skip
        values = {k: v.detach().tolist() for k, v in cols.items()}
        going, done = [], []
        for fi, f in enumerate(active):
            diag = {k: values[k][fi] for k in values}
            if f.it == 0:
                f.diag0 = dict(diag)
            stop = early is not None and not f.request.minimize and diag["loss"] < early
            (done if stop or f.it == n_steps - 1 else going).append((fi, f, diag))
        if going:
            loss[[fi for fi, _, _ in going]].sum().backward()
            for _, f, _ in going:
                f.opt.step()
                f.opt.zero_grad()
                max_norm = clamp * f.init.norm()
                with torch.no_grad():
                    if f.delta.norm() > max_norm:
                        f.delta.mul_(max_norm / f.delta.norm())
                f.it += 1
        for _, f, diag in done:
            diag.update(
                {
                    "n_forward": f.it + 1,
                    "p_target_init": f.diag0["p_target"],
                    "delta_norm": float(f.delta.detach().norm()),
                    "init_norm": float(f.init.norm()),
                }
            )
            logger.debug("case %s value optimisation: %s", f.request.case_id, diag)
            results[f.index] = ValueResult(
                target=(f.init + f.delta.detach()).float(),
                init=f.init,
                diagnostics=diag,
                lookup_in=None if f.lookup_in is None else f.lookup_in[: f.n_rw],
                lookup_out=f.lookup_out[: f.n_rw],
            )
        if done:
            active = [f for _, f, _ in going]
            batch = None
    return results  # type: ignore[return-value]
