"""The passes a tracing replay starts from, and the block arguments it replays with.

* :func:`cached_forward`: one full forward pass recording every block's input, the block / MLP /
  attention outputs and the key/value cache (:class:`PassCache`).
* :func:`record_suffix_args`: what the blocks are called with in a pass over positions ``t..``.

Replaying blocks one by one needs the arguments the model passes to them (causal mask, position
ids, rotary embeddings, the key/value cache...). They differ between architectures, so they are
not rebuilt here: for each prefix length t, one batch-1 *recording pass* runs the model itself on
positions ``t..`` with a ``transformers`` cache holding t prefix positions, and a forward pre-hook
records what each block was called with (the pass stops at block 0 when all layers get the same
arguments). The replay calls the blocks with the same arguments, expanded to the replay's batch
size, with the cache object swapped for :class:`_PrefixCache`, which prepends the right prefix
keys/values (every supported attention only calls ``cache.update(key, value, layer_idx)``).
The arguments depend on the lengths only, so a :class:`SuffixArgsCache` shares them between
facts.
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
from locedit.modeling import cache_kwargs


@contextlib.contextmanager
def _pre_hooks_with_kwargs(hooks: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    handles = [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in hooks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def expand_args(obj, batch: int):
    """Broadcast recorded block arguments of a batch-1 pass to ``batch`` rows.

    Tensors with a leading dimension of 1 and at least 2 dims (masks, position ids, rotary tables)
    are expanded (a view, no copy); tuples/lists are mapped; anything else is passed through.
    """
    if isinstance(obj, torch.Tensor):
        if obj.ndim >= 2 and obj.shape[0] == 1 and batch != 1:
            return obj.expand(batch, *obj.shape[1:])
        return obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(expand_args(o, batch) for o in obj)
    return obj


@dataclass
class PassCache:
    """What one full forward pass left behind, per layer.

    Attributes:
        block_in: per layer, the block's input hidden state ``[batch, pos, d_model]``.
        outputs: per component (``block``/``mlp``/``attn``), per layer, the module's output
            hidden state ``[batch, pos, d_model]``.
        keys / values: per layer, the attention cache ``[batch, kv_heads, pos, head_dim]``.
        logits: ``[batch, n, vocab]`` of the pass's last n positions (n = ``logits_to_keep``,
            all positions if 0).
    """

    block_in: list[torch.Tensor]
    outputs: dict[str, list[torch.Tensor]]
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None

    def expand(self, n: int) -> PassCache:
        """A cache of one row seen as ``n`` identical rows (views, no copy): the clean run as
        the start of a noising replay with one row per noise sample."""
        if self.block_in[0].shape[0] != 1:
            raise ValueError(f"only a one-row pass can be expanded, this one has {self.block_in[0].shape[0]}")
        ex = lambda x: x.expand(n, *x.shape[1:])  # noqa: E731
        return PassCache(
            block_in=[ex(x) for x in self.block_in],
            outputs={c: [ex(x) for x in xs] for c, xs in self.outputs.items()},
            keys=[ex(x) for x in self.keys],
            values=[ex(x) for x in self.values],
            logits=None if self.logits is None else ex(self.logits),
        )

    def rows(self, sl: slice) -> PassCache:
        """The cache of rows ``sl`` of the batch (views, no copy)."""
        return PassCache(
            block_in=[x[sl] for x in self.block_in],
            outputs={c: [x[sl] for x in xs] for c, xs in self.outputs.items()},
            keys=[x[sl] for x in self.keys],
            values=[x[sl] for x in self.values],
            logits=None if self.logits is None else self.logits[sl],
        )


def _block_hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


@torch.inference_mode()
def cached_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    embed_hook: Callable | None = None,
    logits_to_keep: int = 0,
) -> PassCache:
    """One forward pass over ``input_ids`` ``[batch, pos]`` recording every block's input, the
    block / MLP / attention outputs and the key/value cache.

    Args:
        embed_hook: optional forward hook on the embedding (e.g. subject noise).
        logits_to_keep: unembed only the last n positions (0: all), as ``transformers`` does.
    """
    L = n_layers(model)
    components = ("block", "mlp", "attn")
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
        cache.logits = model(
            input_ids=input_ids, use_cache=True, logits_to_keep=logits_to_keep, **cache_kwargs(model, kv)
        ).logits
    cache.keys = [kv.layers[j].keys for j in range(L)]
    cache.values = [kv.layers[j].values for j in range(L)]
    return cache


class _PrefixCache:
    """Stand-in for a ``transformers`` cache during a replay: prepends fixed prefix keys/values.

    ``prefix[layer] = (keys, values)``, each ``[g, kv_heads, t, head_dim]``, is set before block
    ``layer`` runs; a batch of ``B = reps · g`` rows (patch-major) gets it repeated ``reps`` times.
    """

    def __init__(self) -> None:
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix[layer_idx]
        return _prepend(pk, key), _prepend(pv, value)


def _prepend(prefix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B, h, t + n, hd]``: ``prefix`` ``[g, h, t, hd]`` repeated over B / g, then ``x``
    ``[B, h, n, hd]``; written into one buffer (no intermediate repeat)."""
    (B, h, n, hd), g, t = x.shape, prefix.shape[0], prefix.shape[2]
    out = x.new_empty(B, h, t + n, hd)
    out.view(B // g, g, h, t + n, hd)[:, :, :, :t] = prefix
    out[:, :, t:] = x
    return out


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


def _block_args(args, kwargs, cache, replay_cache) -> tuple[tuple, dict]:
    """A block call's arguments without its hidden state, the recording pass's ``cache`` (if
    any) swapped for the replay's."""
    args, kwargs = tuple(args), dict(kwargs)
    if cache is not None:
        args, kwargs = _swap(args, cache, replay_cache), _swap(kwargs, cache, replay_cache)
    if args:
        return tuple(args[1:]), kwargs
    kwargs.pop("hidden_states")
    return args, kwargs


class _StopForward(Exception):
    """Raised by a recording hook once the arguments it needs are recorded."""


def _same_args_every_layer(model: nn.Module) -> bool:
    """Whether all blocks get the same arguments (no per-layer attention types such as
    sliding-window layers, whose masks differ): then block 0's arguments are enough."""
    return len(set(getattr(model.config, "layer_types", None) or ["one"])) == 1


@torch.inference_mode()
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
            args, kwargs = _block_args(args, kwargs, kv, out.cache)
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
            model(input_ids=input_ids[:1, offset:], use_cache=True, **cache_kwargs(model, kv))
        except _StopForward:
            pass
    return out


class SuffixArgsCache:
    """Recorded block arguments of one model per (sequence length, offset), shared by many facts.

    A block's arguments (masks, position ids, rotary tables) depend on the positions only, never
    on the tokens (``tests/models`` checks this for every registered architecture), so facts of
    equal length share them. One recording costs a model call, as much as a small replay batch
    on a small model: a tracing job keeps one cache for all its facts.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._args: dict[tuple[int, int, str], SuffixArgs] = {}

    def get(self, input_ids: torch.Tensor, clean: PassCache, offset: int) -> SuffixArgs:
        """:func:`record_suffix_args` of ``input_ids`` ``[1, pos]``, recorded once per key."""
        key = (input_ids.shape[1], offset, str(input_ids.device))
        if key not in self._args:
            self._args[key] = record_suffix_args(self.model, input_ids, clean, offset)
        return self._args[key]


# --------------------------------------------------------------------------------------------
# Replays whose rows continue from prefixes of different lengths (the editing engine)
# --------------------------------------------------------------------------------------------


class RowPrefixCache:
    """Cache stand-in for a replay whose row ``i`` continues from its own prefix of ``t_i``
    positions: ``prefix[layer] = (keys, values)``, each ``[batch, kv_heads, P, head_dim]`` with
    row ``i``'s keys in the first ``t_i`` slots (the rest is masked by :func:`row_suffix_mask`)."""

    def __init__(self) -> None:
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key, value, layer_idx, *args, **kwargs):
        pk, pv = self.prefix[layer_idx]
        return torch.cat([pk.to(key.dtype), key], 2), torch.cat([pv.to(value.dtype), value], 2)


def row_suffix_mask(
    offsets: torch.Tensor, lengths: torch.Tensor, prefix: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention mask ``[batch, 1, width, prefix + width]`` of a row-wise suffix replay.

    Row ``i`` holds positions ``offsets[i] .. lengths[i] - 1`` of its sequence in suffix slots
    ``0 .. lengths[i] - offsets[i] - 1`` (right-padded to ``width``); its prefix keys fill the first
    ``offsets[i]`` of ``prefix`` slots. A suffix query attends to its row's prefix and to the
    suffix keys at or before it; a padding query attends to itself only, so no row of the softmax
    is empty. Float (0 / dtype min), which both eager and SDPA attention add to their scores.
    """
    n = (lengths - offsets)[:, None, None]  # [batch, 1, 1] valid suffix slots
    q = torch.arange(width)[None, :, None]  # [1, width, 1]
    k = torch.arange(width)[None, None, :]  # [1, 1, width]
    pre = torch.arange(prefix)[None, None, :] < offsets[:, None, None]  # [batch, 1, prefix]
    suf = (k <= q) & ((k < n) | (k == q))  # [batch, width, width]
    allowed = torch.cat([pre.expand(-1, width, -1), suf.expand(len(offsets), -1, -1)], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.no_grad()
def record_row_suffix_args(
    model: nn.Module,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    prefix_shape: tuple[int, int, int, int] | None,
    first_layer: int,
) -> SuffixArgs:
    """Block arguments of a replay of rows that continue from prefixes of different lengths.

    Like :func:`record_suffix_args`, a pass of the model itself records them (masks, position ids,
    rotary tables), here over a batch whose row ``i`` sits at positions ``offsets[i]..`` with the
    4D mask of :func:`row_suffix_mask` (``transformers`` passes a 4D mask through unchanged) and a
    placeholder key/value prefix of ``prefix_shape`` ``[batch, kv_heads, P, head_dim]``, or no
    cache at all when ``prefix_shape`` is None (whole sequences: every offset must be 0).
    Recorded under ``no_grad`` (not inference mode): the replay backpropagates through them.
    The returned ``cache`` is a :class:`RowPrefixCache` whose ``prefix`` the replay sets per layer.
    """
    L = n_layers(model)
    batch, width = len(offsets), int((lengths - offsets).max())
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    kv = None
    if prefix_shape is not None:
        kv = DynamicCache(config=model.config)
        zeros = torch.zeros(prefix_shape, dtype=dtype, device=dev)
        for j in range(L):
            kv.update(zeros, zeros, j)
    elif bool(offsets.any()):
        raise ValueError("rows with a prefix need its key/value shape")
    prefix = 0 if prefix_shape is None else prefix_shape[2]
    mask = row_suffix_mask(offsets, lengths, prefix, width, dtype).to(dev)
    positions = (offsets[:, None] + torch.arange(width)[None]).to(dev)  # [batch, width]
    out = SuffixArgs(0, [None] * L, [None] * L, RowPrefixCache())
    shared = _same_args_every_layer(model)
    # With shared arguments the pass stops at block 0 (embedding, mask and positions only).
    wanted = [0] if shared else list(range(first_layer, L))

    def pre(layer):
        def fn(module, args, kwargs):
            args, kwargs = _block_args(args, kwargs, kv, out.cache)
            for j in range(first_layer, L) if shared else (layer,):
                out.args[j], out.kwargs[j] = args, kwargs
            if layer == wanted[-1]:
                raise _StopForward

        return fn

    dummy = torch.zeros((batch, width), dtype=torch.long, device=dev)
    with _pre_hooks_with_kwargs([(module_for(model, "block", j), pre(j)) for j in wanted]):
        try:
            model(
                input_ids=dummy,
                attention_mask=mask,
                position_ids=positions,
                use_cache=kv is not None,
                **cache_kwargs(model, kv),
            )
        except _StopForward:
            pass
    return out
