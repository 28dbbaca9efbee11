"""The batched restoration engine behind :mod:`locedit.tracing`: replaying the decoder from a layer.

Causal Tracing scores, for one fact, every (token t, centre layer ℓ) restoration: a noised forward
pass in which the chosen representations at token t in the window of layers ``[a, b)`` around ℓ are
overwritten with their clean values. The authors' code runs one full forward pass (11 rows: 1 clean
+ 10 noised) per (t, ℓ). Here:

* the clean pass and the noised pass run **once** per fact and cache, for every layer, the input of
  each block (the residual stream) and the outputs of the block / MLP / attention modules;
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
* the unembedding is applied only at the positions that predict the target tokens.

Replaying blocks one by one needs the arguments the model passes to them (causal mask, position
ids, rotary embeddings, the key/value cache...). They differ between architectures, so they are
not rebuilt here: for each prefix length t, one batch-1 *recording pass* runs the model itself on
positions ``t..`` with a ``transformers`` cache holding t prefix positions, and a forward pre-hook
records what each block was called with (the pass stops at block 0 when all layers get the same
arguments). The replay calls the blocks with the same arguments, expanded to the replay's batch
size, with the cache object swapped for :class:`_PrefixCache`, which prepends the right prefix
keys/values (every supported attention only calls ``cache.update(key, value, layer_idx)``).
Only :mod:`locedit.adapters` names modules; the final norm and unembedding are applied as the
model does (``lm_head(final_norm(h))``). The test suite checks the replay against the
one-pass-per-cell baseline for every registered architecture and kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from locedit.adapters import module_for, n_layers, untuple
from locedit.hooks import forward_hooks

#: Tracing kind -> the adapter component whose output is restored.
KIND_COMPONENT = {"hidden": "block", "mlp": "mlp", "attn": "attn"}


def window_layers(centre: int, window: int, n_layer: int) -> tuple[int, int]:
    """Layers ``[a, b)`` restored for centre ``centre``: ``[ℓ - w//2, ℓ + ceil(w/2))`` clipped.

    This is the authors' rule (paper-spec §3.6): w=5 → [ℓ-2, ℓ+2], w=10 → [ℓ-5, ℓ+4].
    """
    if window < 1:
        raise ValueError(f"tracing window must be >= 1, got {window}")
    return max(0, centre - window // 2), min(n_layer, centre - (-window // 2))


@contextlib.contextmanager
def _pre_hooks_with_kwargs(hooks: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    handles = [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _retuple(output, hidden: torch.Tensor):
    """``output`` with its hidden state (element 0 when a tuple) replaced by ``hidden``."""
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


def _expand(obj, batch: int):
    """Broadcast recorded block arguments of a batch-1 pass to ``batch`` rows.

    Tensors with a leading dimension of 1 and at least 2 dims (masks, position ids, rotary tables)
    are expanded (a view, no copy); tuples/lists are mapped; anything else is passed through.
    """
    if isinstance(obj, torch.Tensor):
        if obj.ndim >= 2 and obj.shape[0] == 1 and batch != 1:
            return obj.expand(batch, *obj.shape[1:])
        return obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_expand(o, batch) for o in obj)
    return obj


@dataclass
class PassCache:
    """What one full forward pass left behind, per layer.

    Attributes:
        block_in: per layer, the block's input hidden state ``[batch, pos, d_model]``.
        outputs: per component (``block``/``mlp``/``attn``), per layer, the module's output
            hidden state ``[batch, pos, d_model]``.
        keys / values: per layer, the attention cache ``[batch, kv_heads, pos, head_dim]``.
        logits: ``[batch, pos, vocab]`` of the pass.
    """

    block_in: list[torch.Tensor]
    outputs: dict[str, list[torch.Tensor]]
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None


def _block_hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def cached_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    components: tuple[str, ...] = ("block", "mlp", "attn"),
    embed_hook: Callable | None = None,
) -> PassCache:
    """One forward pass over ``input_ids`` ``[batch, pos]`` recording every block's input, the
    ``components``' outputs and the key/value cache.

    Args:
        components: module outputs to record at every layer.
        embed_hook: optional forward hook on the embedding (e.g. subject noise).
    """
    L = n_layers(model)
    cache = PassCache(block_in=[None] * L, outputs={c: [None] * L for c in components})

    def pre(layer):
        def fn(module, args, kwargs):
            cache.block_in[layer] = _block_hidden(args, kwargs)

        return fn

    def post(component, layer):
        def fn(module, inputs, output):
            cache.outputs[component][layer] = untuple(output).detach()

        return fn

    hooks = [(module_for(model, c, j), post(c, j)) for c in components for j in range(L)]
    if embed_hook is not None:
        hooks.insert(0, (module_for(model, "embed"), embed_hook))
    kv = DynamicCache(config=model.config)
    with (
        forward_hooks(hooks),
        _pre_hooks_with_kwargs([(module_for(model, "block", j), pre(j)) for j in range(L)]),
    ):
        cache.logits = model(input_ids=input_ids, past_key_values=kv, use_cache=True).logits
    cache.keys = [kv.layers[j].keys for j in range(L)]
    cache.values = [kv.layers[j].values for j in range(L)]
    return cache


class _PrefixCache:
    """Stand-in for a ``transformers`` cache during a replay: prepends fixed prefix keys/values.

    ``prefix[layer] = (keys, values)``, each ``[batch, kv_heads, t, head_dim]``, is set before
    block ``layer`` runs.
    """

    def __init__(self) -> None:
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix[layer_idx]
        return torch.cat([pk, key], dim=-2), torch.cat([pv, value], dim=-2)


@dataclass
class SuffixArgs:
    """Block arguments (all but the hidden state) of a pass over positions ``offset..``."""

    offset: int
    args: list[tuple]
    kwargs: list[dict]
    cache: _PrefixCache


def _swap(obj, old, new):
    if obj is old:
        return new
    if isinstance(obj, (tuple, list)):
        return type(obj)(_swap(o, old, new) for o in obj)
    if isinstance(obj, dict):
        return {k: _swap(v, old, new) for k, v in obj.items()}
    return obj


class _StopForward(Exception):
    """Raised by a recording hook once the arguments it needs are recorded."""


def _same_args_every_layer(model: nn.Module) -> bool:
    """Whether all blocks get the same arguments (no per-layer attention types such as
    sliding-window layers, whose masks differ): then block 0's arguments are enough."""
    return len(set(getattr(model.config, "layer_types", None) or ["one"])) == 1


@torch.no_grad()
def record_suffix_args(
    model: nn.Module, input_ids: torch.Tensor, clean: PassCache, offset: int
) -> SuffixArgs:
    """Record the block arguments of a batch-1 pass over ``input_ids[:, offset:]`` ``[1, pos]``
    that continues from a cache of the first ``offset`` positions (see module docstring).

    When every layer gets the same arguments, the pass is stopped at block 0 (only the
    embedding, mask and position computations run) and block 0's arguments serve every layer.
    """
    L = n_layers(model)
    kv = DynamicCache(config=model.config)
    for j in range(L):
        kv.update(clean.keys[j][:1, :, :offset], clean.values[j][:1, :, :offset], j)
    out = SuffixArgs(offset, [None] * L, [None] * L, _PrefixCache())
    shared = _same_args_every_layer(model)

    def pre(layer):
        def fn(module, args, kwargs):
            args, kwargs = _swap(tuple(args), kv, out.cache), _swap(dict(kwargs), kv, out.cache)
            if args:
                args = tuple(args[1:])
            else:
                kwargs.pop("hidden_states")
            for j in range(L) if shared else (layer,):
                out.args[j], out.kwargs[j] = args, kwargs
            if shared:
                raise _StopForward

        return fn

    blocks = [module_for(model, "block", j) for j in range(L)]
    with _pre_hooks_with_kwargs(
        [(b, pre(j)) for j, b in enumerate(blocks[:1] if shared else blocks)]
    ):
        try:
            model(input_ids=input_ids[:1, offset:], past_key_values=kv, use_cache=True)
        except _StopForward:
            pass
    return out


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


@torch.no_grad()
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
) -> list[torch.Tensor]:
    """Target log-probabilities of each patched run, replaying blocks from each patch's start.

    Args:
        patches: the runs; see :class:`Patch`.
        starts: per group, the pass whose block inputs and key/value cache runs start from.
        component: ``block``, ``mlp`` or ``attn``: whose output is patched.
        source: per layer, the value written ``[1, pos, d_model]`` (clean outputs); ``None``
            writes zeros (representation zeroing).
        suffix_args: offset -> recorded block arguments (:func:`record_suffix_args`).
        read_positions: positions whose logits predict the target tokens (all ``>= offset``).
        target_ids: the target token ids (same length as ``read_positions``).
        row_budget: maximum rows per replay batch (rows = patches x rows of their group).

    Returns:
        One tensor ``[rows_g]`` of log p(target) per patch, in the order of ``patches``.
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
            return _retuple(output, torch.where(mask, value, h))

        return fn

    results: list[torch.Tensor | None] = [None] * len(patches)
    tgt = torch.tensor(target_ids)
    blocks = [module_for(model, "block", j) for j in range(L)]
    final_norm, lm_head = module_for(model, "final_norm"), module_for(model, "lm_head")
    with forward_hooks([(module_for(model, component, j), hook(j)) for j in range(L)]):
        for chunk in _chunks(patches, rows_of, row_budget):
            t, start = patches[chunk[0]].offset, starts[patches[chunk[0]].group]
            sa = suffix_args(t)
            state["offset"] = t
            width = start.block_in[0].shape[1] - t
            h = None
            rows: list[int] = []  # patch index of each row of h
            first_row: dict[int, int] = {}  # patch index -> its first row in h
            row_mask = row_stop = None  # [rows, width] patched positions; [rows] window stop
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
                    m, stop = m.to(new.device), stop.to(new.device)
                    h = new if h is None else torch.cat([h, new])
                    row_mask = m if row_mask is None else torch.cat([row_mask, m])
                    row_stop = stop if row_stop is None else torch.cat([row_stop, stop])
                if j == L:
                    break
                B, reps = h.shape[0], h.shape[0] // start.block_in[0].shape[0]
                # every row in the batch has start <= j, so it is patched iff j < stop
                state["mask"] = (
                    (row_mask & (row_stop > j)[:, None]).unsqueeze(-1) if j < max_stop else None
                )
                pk, pv = start.keys[j][:, :, :t], start.values[j][:, :, :t]
                sa.cache.prefix = {j: (pk.repeat(reps, 1, 1, 1), pv.repeat(reps, 1, 1, 1))}
                out = blocks[j](h, *_expand(sa.args[j], B), **_expand(sa.kwargs[j], B))
                h = untuple(out)
            state["mask"] = None
            sa.cache.prefix = {}
            hr = h[:, [r - t for r in read_positions]]  # [rows, n_target, d_model]
            logits = lm_head(final_norm(hr))
            logp = torch.log_softmax(logits.float(), dim=-1)
            idx = tgt.to(logp.device).view(1, -1, 1).expand(logp.shape[0], -1, 1)
            lp = logp.gather(-1, idx).squeeze(-1).sum(-1).cpu()  # [rows]
            r0 = 0
            for i in dict.fromkeys(rows):  # rows of one patch are contiguous
                results[i] = lp[r0 : r0 + rows_of[i]]
                r0 += rows_of[i]
    return results
