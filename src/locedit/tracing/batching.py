"""The batched restoration engine behind :mod:`locedit.tracing.trace`: replaying the decoder from a layer.

Causal Tracing scores, for one fact, every (token t, centre layer ℓ) restoration: a noised forward
pass in which the chosen representations at token t in the window of layers ``[a, b)`` around ℓ are
overwritten with their clean values. The authors' code runs one full forward pass (11 rows: 1 clean
+ 10 noised) per (t, ℓ). Here:

* the clean and noised passes run **once** per fact, as one pass of 1 + samples rows, and cache,
  for every layer, the input of each block (the residual stream) and the outputs of the block /
  MLP / attention modules (:mod:`locedit.tracing.passes`);
* below layer ``a`` a restored run is identical to the noised run, so it **starts from the cached
  noised block input at layer a** and only blocks ``a..L-1`` are computed;
* (done by the caller, :class:`locedit.tracing.FactTracer`) the window's first layer a itself is
  not computed for ``hidden``/``mlp`` restorations: its output differs from the noised run only at
  token t, by a known amount, so runs start at layer a + 1 from a derived state;
* positions before the restored token t are identical to the noised run at every layer (causal
  attention), so only positions ``t..`` are computed, attending to the noised run's cached
  keys/values of positions ``< t`` (a key/value prefix, as in incremental decoding);
* restorations are batched: rows (one per noise sample and restoration) sharing a restored token
  are processed in chunks of at most ``row_budget`` rows ordered by start layer, and the batch
  *grows* as the replay climbs the layers (a row joins at its own start layer), so no row ever
  recomputes a noised state;
* runs whose windows start at the same layer (the centres whose windows are clipped at layer 0)
  are identical up to the end of the shorter window, so the shorter one is not computed there:
  it *forks* from the longest one's rows when its own window ends;
* the MLP is computed only where its output is used (:func:`locedit.kernels.mlp_only_where`):
  not at the patched positions when the patch overwrites the MLP or block output, and in the last
  layer only at the positions that predict the target tokens, the only ones unembedded.

The passes replays start from and the arguments blocks are replayed with come from
:mod:`locedit.tracing.passes`. Only :mod:`locedit.adapters` names modules; the final norm and
unembedding are applied as the model does (``lm_head(final_norm(h))``). The test suite checks
the replay against the one-pass-per-cell baseline for every registered architecture and kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from locedit.adapters import module_for, n_layers, untuple
from locedit.hooks import forward_hooks
from locedit.kernels import mlp_only_where
from locedit.registry.kinds import TRACE_KINDS
from locedit.tracing.passes import PassCache, SuffixArgs, expand_args

#: Restoration kinds → the adapter component restored (locedit.registry.kinds).
KIND_COMPONENT = {k.name: k.component for k in TRACE_KINDS.values() if k.component is not None}


def _retuple(output, hidden: torch.Tensor):
    """``output`` with its hidden state (element 0 when a tuple) replaced by ``hidden``."""
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


@dataclass(frozen=True)
class Patch:
    """One replayed run.

    Attributes:
        start: first block computed (the window's lowest layer).
        stop: the component output at layers ``[start, stop)`` is overwritten.
        positions: token positions overwritten (a tuple of ints, all ``>= offset``).
        offset: first position computed; earlier positions come from the start pass's cache.
        group: index of the start pass in ``starts`` (e.g. 0 = noised run with ``samples`` rows,
            or the clean run with 1 row). Each patch contributes as many rows as that pass has.
        init: optional start state ``[rows_g, pos - offset, d_model]`` replacing that pass's
            block input at ``start`` (``start`` may then be ``n_layers``: no block to run). It
            must depend only on (start, positions, offset, group): patches equal in those are
            replayed as one run up to the shorter window's stop (:func:`_fork_plan`).
    """

    start: int
    stop: int
    positions: tuple[int, ...]
    offset: int = 0
    group: int = 0
    init: Callable[[], torch.Tensor] | None = field(default=None, compare=False)


def _chunks(patches: list[Patch], rows_of: list[int], row_budget: int) -> list[list[int]]:
    """Patch indices per replay batch: one (offset, group) each, at most ``row_budget`` rows,
    ordered by start layer so the batch grows as the replay climbs."""
    order = sorted(
        range(len(patches)),
        key=lambda i: (
            patches[i].offset,
            patches[i].group,
            patches[i].start,
            patches[i].positions,
            -patches[i].stop,
        ),
    )
    chunks, cur, cur_rows = [], [], 0
    for i in order:
        key = (patches[i].offset, patches[i].group)
        if cur and (
            cur_rows + rows_of[i] > row_budget
            or key != (patches[cur[0]].offset, patches[cur[0]].group)
        ):
            chunks.append(cur)
            cur, cur_rows = [], 0
        cur.append(i)
        cur_rows += rows_of[i]
    return chunks + [cur] if cur else chunks


def _fork_plan(patches: list[Patch], chunk: list[int]) -> dict[int, tuple[int, int | None]]:
    """Per patch of a chunk: ``(layer where its rows join, patch they fork from or None)``.

    Patches equal in (start, positions) (and, within a chunk, offset and group) patch the same
    layers up to the shorter window's stop, so their runs agree until then: each joins at its
    own stop as a copy of the family's longest-window run, which joins at ``start``.
    """
    plan: dict[int, tuple[int, int | None]] = {}
    root: dict[tuple, int] = {}
    for i in sorted(chunk, key=lambda i: -patches[i].stop):
        p = patches[i]
        key = (p.start, p.positions)
        if key in root and p.stop > p.start:
            plan[i] = (p.stop, root[key])
        else:
            root.setdefault(key, i)
            plan[i] = (p.start, None)
    return plan


_NO_OP = contextlib.nullcontext()


def _mlp_needed(
    patched: torch.Tensor | None, rows: int, width: int, last: bool, reads: list[int]
) -> torch.Tensor | None:
    """``[rows, width]`` bool: where a block's MLP output is used, or None if everywhere.

    Not where the patch overwrites it (``patched``, when the MLP or block output is patched),
    and at the last layer only at the positions unembedded (``reads``).
    """
    if patched is None and not last:
        return None
    need = torch.ones(rows, width, dtype=torch.bool) if patched is None else ~patched
    if last:
        read = torch.zeros(width, dtype=torch.bool)
        read[reads] = True
        need &= read
    return None if bool(need.all()) else need


@torch.inference_mode()
def replay_patches(
    model: nn.Module,
    patches: list[Patch],
    *,
    starts: list[PassCache],
    component: str,
    source: list[torch.Tensor] | None,
    suffix_args: Callable[[int], SuffixArgs],
    read_positions: list[int],
    target_ids: list[int],
    row_budget: int = 512,
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Target log-probabilities of each patched run, replaying blocks from each patch's start.

    Args:
        patches: the runs; see :class:`Patch`.
        starts: per group, the pass whose block inputs and key/value cache runs start from.
        component: ``block``, ``mlp`` or ``attn``: whose output is patched.
        source: per layer, the value written ``[n, pos, d_model]``: one row for every replayed
            row (the clean outputs when denoising), or one per row of the start pass, repeated
            over the patches (the noised outputs when noising); ``None`` writes zeros
            (representation zeroing).
        suffix_args: offset -> recorded block arguments (:func:`record_suffix_args`).
        read_positions: positions whose logits predict the target tokens (all ``>= offset``).
        target_ids: the target token ids (same length as ``read_positions``).
        row_budget: maximum rows per replay batch (rows = patches x rows of their group).
        score: ``[rows, n_target, vocab]`` log-probabilities at the read positions -> ``[rows]``;
            by default log p(target) (the target tokens' log-probabilities summed).

    Returns:
        One tensor ``[rows_g]`` of scores per patch, in the order of ``patches``.
    """
    L = n_layers(model)
    rows_of = [starts[p.group].block_in[0].shape[0] for p in patches]
    state: dict[str, torch.Tensor | None] = {"mask": None, "offset": 0}

    def hook(layer):
        def fn(module, inputs, output):
            mask = state["mask"]  # [batch, pos - offset, 1] bool: patched rows/positions
            if mask is None:
                return output
            h = untuple(output)
            if source is None:
                value = h.new_zeros(())
            else:
                value = source[layer][:, state["offset"] :].to(h.dtype)
                if 1 < value.shape[0] != h.shape[0]:
                    # a row per start-pass row: every patch's rows are that pass's, in order
                    value = value.repeat(h.shape[0] // value.shape[0], 1, 1)
            return _retuple(output, torch.where(mask, value, h))

        return fn

    results: list[torch.Tensor | None] = [None] * len(patches)
    tgt = torch.tensor(target_ids)
    blocks = [module_for(model, "block", j) for j in range(L)]
    final_norm, lm_head = module_for(model, "final_norm"), module_for(model, "lm_head")
    mlps = [module_for(model, "mlp", j) for j in range(L)]
    # whose MLP output a patch overwrites (the MLP's, or the whole block's)
    overwrites_mlp = component in ("mlp", "block")
    with forward_hooks([(module_for(model, component, j), hook(j)) for j in range(L)]):
        for chunk in _chunks(patches, rows_of, row_budget):
            t, start = patches[chunk[0]].offset, starts[patches[chunk[0]].group]
            sa = suffix_args(t)
            state["offset"] = t
            width = start.block_in[0].shape[1] - t
            reads = [r - t for r in read_positions]  # read positions in the replayed window
            h = None
            rows: list[int] = []  # patch index of each row of h
            first_row: dict[int, int] = {}  # patch index -> its first row in h
            # (on the CPU, where they are built) [rows, width] patched positions; [rows] stop
            row_mask = row_stop = None
            max_stop = 0
            plan = _fork_plan(patches, chunk)
            for j in range(min(join for join, _ in plan.values()), L + 1):
                joining = [i for i in chunk if plan[i][0] == j]
                pieces, n_rows = [], len(rows)
                for i in joining:
                    first_row[i], n_rows = n_rows, n_rows + rows_of[i]
                    src = plan[i][1]  # joined below j (its start < this patch's stop = j)
                    if src is not None:
                        pieces.append(h[first_row[src] : first_row[src] + rows_of[i]])
                    elif patches[i].init:
                        pieces.append(patches[i].init())
                    else:
                        pieces.append(start.block_in[j][:, t:])
                if joining:
                    new = torch.cat(pieces)
                    m = torch.zeros(new.shape[0], width, dtype=torch.bool)
                    stop = torch.empty(new.shape[0], dtype=torch.long)
                    r0 = 0
                    for i in joining:
                        m[r0 : r0 + rows_of[i], [q - t for q in patches[i].positions]] = True
                        stop[r0 : r0 + rows_of[i]] = patches[i].stop
                        max_stop = max(max_stop, patches[i].stop)
                        r0 += rows_of[i]
                        rows += [i] * rows_of[i]
                    h = new if h is None else torch.cat([h, new])
                    row_mask = m if row_mask is None else torch.cat([row_mask, m])
                    row_stop = stop if row_stop is None else torch.cat([row_stop, stop])
                if j == L:
                    break
                B = h.shape[0]
                # every row in the batch has start <= j, so it is patched iff j < stop
                patched = row_mask & (row_stop > j)[:, None] if j < max_stop else None
                state["mask"] = None if patched is None else patched.to(h.device).unsqueeze(-1)
                sa.cache.prefix = {j: (start.keys[j][:, :, :t], start.values[j][:, :, :t])}
                need = _mlp_needed(patched if overwrites_mlp else None, B, width, j == L - 1, reads)
                with mlp_only_where(mlps[j], need.to(h.device)) if need is not None else _NO_OP:
                    out = blocks[j](h, *expand_args(sa.args[j], B), **expand_args(sa.kwargs[j], B))
                h = untuple(out)
            state["mask"] = None
            sa.cache.prefix = {}
            hr = h[:, reads]  # [rows, n_target, d_model]
            logits = lm_head(final_norm(hr))
            logp = torch.log_softmax(logits.float(), dim=-1)
            if score is None:
                idx = tgt.to(logp.device).view(1, -1, 1).expand(logp.shape[0], -1, 1)
                lp = logp.gather(-1, idx).squeeze(-1).sum(-1).cpu()  # [rows]
            else:
                lp = score(logp).cpu()
            r0 = 0
            for i in dict.fromkeys(rows):  # rows of one patch are contiguous
                results[i] = lp[r0 : r0 + rows_of[i]]
                r0 += rows_of[i]
    return results
