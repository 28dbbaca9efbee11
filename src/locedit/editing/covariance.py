"""Second-moment statistics C = E[k kᵀ] of the MLP down-projection input k, per layer.

ROME's update needs C⁻¹k* and MEMIT's needs (λC + K Kᵀ)⁻¹K at every layer an edit may touch.
C is the *uncentered* second moment of the keys over the tokens of a text corpus (ROME: 100k
Wikipedia articles, each truncated to the model's context; ROME ``layer_stats.py``).

* :func:`compute_layer_stats` collects every requested layer in **one** pass over the corpus
  (the authors run one pass per layer), saving the partial sums to ``partial.pt`` every
  ``checkpoint_every`` batches so an interrupted job resumes where it stopped. Per-layer files
  use ROME's ``.npz`` layout (``mom2.mom2`` = Σ kkᵀ, ``mom2.count`` = #tokens), so ROME's
  published files can be used instead (:func:`import_rome_npz`) and ours read by ROME's code.
* :class:`CovarianceStore` loads C per layer on demand and factorises it once (Cholesky, float64
  by default) per job; ROME's C⁻¹k and MEMIT's solve both reuse the cached factor.

Corpus format: a text file with one document per line (the fact world's ``corpus.txt``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import module_for, module_name, n_layers
from locedit.hooks import forward_hooks
from locedit.files import file_sha256
from locedit.io import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTIAL = "partial.pt"
LAYER_FILE = "layer_{layer}.npz"
#: ROME's cache file name, relative to a directory of its stats (``{module}`` = module path).
ROME_NPZ_PATTERN = "{module}_float32_mom2_100000.npz"
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------
# The corpus pass
# --------------------------------------------------------------------------------------------


def read_documents(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of the corpus file (one document per line)."""
    with open(path, encoding="utf-8") as f:
        docs = [line.strip() for line in f]
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"corpus {path} has no non-empty lines")
    return docs


def select_documents(docs: Sequence[str], sample_size: int | None, seed: int) -> list[str]:
    """A seeded random subset of ``sample_size`` documents (all when None), in sampled order."""
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(int(seed)))
    n = len(docs) if sample_size is None else min(int(sample_size), len(docs))
    return [docs[i] for i in order[:n].tolist()]


def model_max_length(model: nn.Module) -> int:
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, attr, None):
            return int(getattr(cfg, attr))
    raise ValueError("cannot tell the model's context length; set editing.stats.max_length")


@dataclass
class MomentState:
    """Running sums. ``sums[layer]``: ``[d_mlp, d_mlp]`` Σ kkᵀ; ``count``: tokens; ``n_docs``:
    documents consumed (a resumed pass skips them)."""

    sums: dict[int, torch.Tensor]
    count: int = 0
    n_docs: int = 0
    meta: dict = field(default_factory=dict)


class _StopForward(Exception):
    """Raised by the hook of the deepest needed layer: later layers need not run."""


def save_partial(state: MomentState, path: Path) -> None:
    """Atomic checkpoint of the running sums (CPU copies)."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "sums": {l: s.cpu() for l, s in state.sums.items()},
                "count": state.count,
                "n_docs": state.n_docs,
                "meta": state.meta,
            },
            tmp,
        )


def load_partial(path: Path, meta: dict, device) -> MomentState | None:
    """The checkpoint at ``path`` if it was made with the same ``meta`` (else None, warned)."""
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck["meta"] != meta:
        logger.warning("ignoring checkpoint %s: made with different settings", path)
        return None
    logger.info("resuming from %s: %d documents, %d tokens", path, ck["n_docs"], ck["count"])
    sums = {int(l): s.to(device) for l, s in ck["sums"].items()}
    return MomentState(sums, int(ck["count"]), int(ck["n_docs"]), ck["meta"])


@torch.no_grad()
def accumulate_second_moments(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    docs: Sequence[str],
    layers: Sequence[int],
    *,
    max_length: int,
    batch_size: int,
    precision: str = "float32",
    state: MomentState | None = None,
    checkpoint: Callable[[MomentState], None] | None = None,
    checkpoint_every: int = 0,
    stop_after_batches: int | None = None,
    progress=None,
) -> MomentState:
    """Add Σ kkᵀ over the (unpadded) tokens of ``docs`` for every layer in one forward per batch.

    Args:
        docs: documents, each truncated to ``max_length`` tokens.
        state: a resumed state; its first ``state.n_docs`` documents are skipped.
        checkpoint: called with the state every ``checkpoint_every`` batches (0: never).
        stop_after_batches: stop early (tests simulate an interrupted job with it).
        progress: a tqdm-like wrapper ``progress(iterable, total=...)`` or None.
    """
    device = next(model.parameters()).device
    dtype = PRECISIONS[precision]
    layers = sorted(set(int(l) for l in layers))
    if state is None:
        state = MomentState({})
    mask_ref: dict[str, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(module, inputs, output):
            k = inputs[0]  # [batch, pos, d_mlp]
            a = k[mask_ref["mask"]].to(dtype)  # [n_tokens, d_mlp]
            if layer not in state.sums:
                state.sums[layer] = torch.zeros(a.shape[1], a.shape[1], dtype=dtype, device=device)
            state.sums[layer].addmm_(a.t(), a)
            if layer == layers[-1]:
                raise _StopForward

        return hook

    hooks = [(module_for(model, "mlp_out", l), make_hook(l)) for l in layers]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    starts = range(state.n_docs, len(docs), batch_size)
    it = progress(starts, total=len(starts)) if progress else starts
    with forward_hooks(hooks):
        for b, start in enumerate(it):
            if stop_after_batches is not None and b >= stop_after_batches:
                break
            chunk = docs[start : start + batch_size]
            rows = [tok(d)["input_ids"][:max_length] for d in chunk]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = True
            ids, mask = ids.to(device), mask.to(device)
            mask_ref["mask"] = mask
            try:
                model(input_ids=ids, attention_mask=mask.long())
            except _StopForward:
                pass
            state.count += int(mask.sum())
            state.n_docs = start + len(chunk)
            if checkpoint is not None and checkpoint_every and (b + 1) % checkpoint_every == 0:
                checkpoint(state)
    return state


# --------------------------------------------------------------------------------------------
# Files: ours (ROME-compatible .npz) and ROME's
# --------------------------------------------------------------------------------------------


def write_layer_npz(path: Path, mom2_sum: torch.Tensor, count: int) -> None:
    """ROME ``SecondMoment`` state under ``mom2.``: Σkkᵀ (float32) and the token count."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{"mom2.mom2": mom2_sum.cpu().float().numpy(), "mom2.count": np.int64(count)})


def load_npz_moment(path: str | os.PathLike) -> torch.Tensor:
    """C = Σkkᵀ / count (``[d_mlp, d_mlp]`` float32) from an ``.npz`` (ours or ROME's)."""
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        mom = next((k for k in ("mom2.mom2", "mom2") if k in keys), None)
        cnt = next((k for k in ("mom2.count", "count") if k in keys), None)
        if mom is None or cnt is None:
            raise ValueError(f"{path}: not a second-moment file (keys: {keys})")
        return torch.from_numpy(z[mom].astype(np.float32) / float(z[cnt]))


def import_rome_npz(
    model: nn.Module, layers: Sequence[int], npz_dir: str | os.PathLike, pattern: str = ROME_NPZ_PATTERN
) -> dict[int, Path]:
    """ROME stats files present in ``npz_dir`` for ``layers`` (``{module}`` → module path)."""
    found = {}
    for layer in layers:
        p = Path(npz_dir, pattern.format(module=module_name(model, "mlp_out", layer), layer=layer))
        if p.exists():
            found[layer] = p
    return found


def missing_rome_layers(
    model: nn.Module, layers: str | Sequence[int], npz_dir: str | os.PathLike, pattern: str = ROME_NPZ_PATTERN
) -> list[int]:
    """The layers of ``layers`` (``"all"`` or indices) without a file in ``npz_dir``."""
    wanted = resolve_layers(model, layers)
    found = import_rome_npz(model, wanted, npz_dir, pattern)
    return [layer for layer in wanted if layer not in found]


def resolve_layers(model: nn.Module, layers: str | Sequence[int]) -> list[int]:
    """``"all"`` → every layer; else the listed layers, checked against the model."""
    total = n_layers(model)
    if layers == "all":
        return list(range(total))
    out = sorted(set(int(l) for l in layers))
    bad = [l for l in out if not 0 <= l < total]
    if bad:
        raise ValueError(f"editing.stats.layers: {bad} outside [0, {total})")
    return out


def compute_layer_stats(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    corpus: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layers: str | Sequence[int] = "all",
    sample_size: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    precision: str = "float32",
    seed: int = 0,
    checkpoint_every: int = 100,
    rome_npz_dir: str | None = None,
    rome_npz_pattern: str = ROME_NPZ_PATTERN,
    progress=None,
    stop_after_batches: int | None = None,
) -> dict:
    """Write ``layer_{l}.npz`` for every layer into ``out_dir`` and return the manifest.

    Layers found among ROME's published files (``rome_npz_dir``) are copied; the others are
    computed in one pass. The manifest is written last by the caller (it marks completion).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = resolve_layers(model, layers)
    max_length = int(max_length or model_max_length(model))
    rome = import_rome_npz(model, layers, rome_npz_dir, rome_npz_pattern) if rome_npz_dir else {}
    todo = [l for l in layers if l not in rome]
    sources: dict[str, str] = {}
    for layer, src in rome.items():
        dst = out_dir / LAYER_FILE.format(layer=layer)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        sources[str(layer)] = f"rome_npz:{src}"
    count = n_docs = 0
    if todo:
        docs = select_documents(read_documents(corpus), sample_size, seed)
        meta = {
            "corpus_sha256": file_sha256(corpus),
            "layers": todo,
            "sample_size": sample_size,
            "max_length": max_length,
            "batch_size": batch_size,
            "precision": precision,
            "seed": seed,
        }
        device = next(model.parameters()).device
        partial = out_dir / PARTIAL
        state = load_partial(partial, meta, device) or MomentState({}, meta=meta)
        state = accumulate_second_moments(
            model, tok, docs, todo,
            max_length=max_length, batch_size=batch_size, precision=precision, state=state,
            checkpoint=lambda s: save_partial(s, partial), checkpoint_every=checkpoint_every,
            stop_after_batches=stop_after_batches, progress=progress,
        )  # fmt: skip
        if state.n_docs < len(docs):
            save_partial(state, partial)
            raise InterruptedError(f"stopped after {state.n_docs}/{len(docs)} documents")
        for layer in todo:
            write_layer_npz(out_dir / LAYER_FILE.format(layer=layer), state.sums[layer], state.count)
            sources[str(layer)] = "computed"
        count, n_docs = state.count, state.n_docs
        partial.unlink(missing_ok=True)
    files = {str(l): LAYER_FILE.format(layer=l) for l in layers}
    for name in files.values():  # cached stats are protected: read-only
        os.chmod(out_dir / name, 0o444)
    return {
        "layers": layers,
        "files": files,
        "sources": sources,
        "corpus": str(corpus),
        "n_documents": n_docs,
        "n_tokens": count,
        "sample_size": sample_size,
        "max_length": max_length,
        "precision": precision,
        "seed": seed,
    }


def write_manifest(manifest: dict, out_dir: str | os.PathLike) -> None:
    write_json(manifest, Path(out_dir, MANIFEST))


# --------------------------------------------------------------------------------------------
# The store used by edit jobs
# --------------------------------------------------------------------------------------------


class CovarianceStore:
    """Per-layer C, factorised once per job (lazily, cached), for ROME's and MEMIT's solves.

    Args:
        loader: ``layer -> C [d_mlp, d_mlp]`` (normalised second moment, any float dtype).
        device: where factors live and solves run (the model's device).
        factor_dtype: dtype of the Cholesky factor and solves (float64 default: C is badly
            conditioned; MEMIT solves in float64 too).
        max_cached: keep at most this many layers' factors (least recently used dropped); None:
            all. A GPT-J factor in float64 takes 2.1 GB.
    """

    def __init__(
        self,
        loader: Callable[[int], torch.Tensor],
        *,
        device: torch.device | str = "cpu",
        factor_dtype: torch.dtype = torch.float64,
        max_cached: int | None = None,
    ):
        self._loader = loader
        self.device = torch.device(device)
        self.factor_dtype = factor_dtype
        self.max_cached = max_cached
        self._factors: dict[int, torch.Tensor] = {}
        self.jitter: dict[int, float] = {}

    @classmethod
    def from_dir(cls, path: str | os.PathLike, model: nn.Module | None = None, **kwargs) -> CovarianceStore:
        """Stats written by :func:`compute_layer_stats` (``path``: the directory or its manifest).

        Passing ``model`` puts factors on its device and checks ``d_mlp`` on first use.
        """
        path = Path(path)
        out_dir = path.parent if path.name == MANIFEST else path
        manifest = read_json(out_dir / MANIFEST)
        files = {int(l): out_dir / f for l, f in manifest["files"].items()}

        def loader(layer: int) -> torch.Tensor:
            if layer not in files:
                raise KeyError(f"no covariance statistics for layer {layer} in {out_dir}")
            return load_npz_moment(files[layer])

        if model is not None:
            kwargs.setdefault("device", next(model.parameters()).device)
        store = cls(loader, **kwargs)
        store.layers = sorted(files)
        return store

    @classmethod
    def from_rome_npz(cls, npz_dir: str | os.PathLike, model: nn.Module, pattern: str = ROME_NPZ_PATTERN, **kwargs) -> CovarianceStore:
        """ROME's published stats directly (e.g. ``.../EleutherAI_gpt-j-6B/wikipedia_stats``)."""

        def loader(layer: int) -> torch.Tensor:
            p = Path(npz_dir, pattern.format(module=module_name(model, "mlp_out", layer), layer=layer))
            return load_npz_moment(p)

        kwargs.setdefault("device", next(model.parameters()).device)
        return cls(loader, **kwargs)

    @classmethod
    def from_matrices(cls, mats: dict[int, torch.Tensor], **kwargs) -> CovarianceStore:
        """In-memory C per layer (tests, benchmarks)."""
        return cls(lambda layer: mats[layer], **kwargs)

    def mom2(self, layer: int) -> torch.Tensor:
        """C of ``layer`` (``[d_mlp, d_mlp]``, loaded fresh; not cached)."""
        return self._loader(layer)

    def factor(self, layer: int) -> torch.Tensor:
        """Lower Cholesky factor L of C (``C = L Lᵀ``), computed once and cached.

        A C that is not numerically positive definite (tiny corpus, dead units) gets the smallest
        diagonal jitter ``eps · mean(diag C)`` (eps = 1e-10, 1e-9, …) that makes it so, logged
        and recorded in ``self.jitter``.
        """
        if layer in self._factors:
            self._factors[layer] = self._factors.pop(layer)  # most recently used last
            return self._factors[layer]
        c = self._loader(layer).to(self.device, self.factor_dtype)
        c = (c + c.T) / 2
        chol, info = torch.linalg.cholesky_ex(c)
        jitter = 0.0
        eps = 1e-10
        while int(info) != 0:
            if eps > 1e-2:
                raise ValueError(f"covariance of layer {layer} is not positive definite")
            jitter = eps * float(c.diagonal().mean())
            chol, info = torch.linalg.cholesky_ex(c + jitter * torch.eye(len(c), dtype=c.dtype, device=c.device))
            eps *= 10
        if jitter:
            logger.warning("layer %d covariance needed diagonal jitter %.3g", layer, jitter)
        self.jitter[layer] = jitter
        if self.max_cached is not None:
            while len(self._factors) >= self.max_cached:
                self._factors.pop(next(iter(self._factors)))
        self._factors[layer] = chol
        return chol

    def inv_times(self, layer: int, k: torch.Tensor) -> torch.Tensor:
        """C⁻¹ k for ``k`` ``[d_mlp]`` or ``[d_mlp, n]`` (result float32, on the store's device)."""
        vec = k.ndim == 1
        rhs = (k[:, None] if vec else k).to(self.device, self.factor_dtype)
        out = torch.cholesky_solve(rhs, self.factor(layer))
        return (out[:, 0] if vec else out).float()

    def inv(self, layer: int) -> torch.Tensor:
        """Explicit C⁻¹ (``[d_mlp, d_mlp]`` float32); prefer :meth:`inv_times`."""
        return torch.cholesky_inverse(self.factor(layer)).float()

    def memit_solve(self, layer: int, lam: float, keys: torch.Tensor) -> torch.Tensor:
        """``(λC + K Kᵀ)⁻¹ K`` for keys ``K`` ``[d_mlp, n]`` → ``[d_mlp, n]`` float32.

        Woodbury with the cached factor: ``A⁻¹K (I + KᵀA⁻¹K)⁻¹`` with ``A = λC``, an n×n solve
        instead of a d_mlp×d_mlp one per edit (MEMIT solves the full system in float64).
        """
        k = keys.to(self.device, self.factor_dtype)
        a_inv_k = torch.cholesky_solve(k, self.factor(layer)) / lam  # [d_mlp, n]
        small = torch.eye(k.shape[1], dtype=k.dtype, device=k.device) + k.T @ a_inv_k  # [n, n]
        return torch.linalg.solve(small, a_inv_k.T).T.float()
