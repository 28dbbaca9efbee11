"""Causal Tracing and representation zeroing of one fact (paper §3.2, App. B; ROME §2.1).

Semantics (paper-spec §3-4), for a prompt template ``r`` with subject ``s`` and target ``o``:

* **Corruption.** Gaussian noise ``N(0, σ²)`` is added to the *embedding-module output* at the
  subject's token positions only (for GPT-2 before position embeddings are added, as in ROME).
  ``samples`` noise draws are made once per fact (from ``seed``) and every restoration of that
  fact uses the same draws (the authors' common random numbers).
* **Scores** are probabilities of the *full* target token sequence (teacher forced, product of
  token probabilities), averaged over the noise draws (probabilities, not log-probabilities).
* **Restoration** of kind ``hidden`` (block output), ``mlp`` (MLP output) or ``attn`` (attention
  output) at token t and centre layer ℓ overwrites that output at token t for every layer in
  ``[ℓ - w//2, ℓ + ceil(w/2))`` (clipped at 0 and L) with its clean value.
  Tokens before the subject are not traced: restoring them is exactly a no-op (their states do not
  depend on the subject), so their row holds ``p_noised``, as in the authors' code.
* **Zeroing** (App. B): in the clean run, the MLP outputs at *all* subject tokens are set to zero
  over the window around ℓ; the effect is the fraction of the clean probability removed.
* **o_noise** (tracing reversal target, paper-spec §15.6): greedy decoding after the prompt where
  each next token is the argmax of the next-token distribution *averaged over the same noise
  draws*; decoding stops at the end of the first word (whitespace or punctuation after a word,
  EOS, or ``max_new_tokens``) and o_noise is that word. If no word comes out (only punctuation or
  EOS), the most probable first token that decodes to a word is used. Deterministic.

Beyond the paper, a registered kind may patch with other settings (:mod:`locedit.registry.kinds`):
symmetric token replacement instead of noise (a :class:`FactTracer` built with ``replacement``,
the partner subject's embeddings, one corrupted row), noising instead of denoising (the clean run
replayed with the corrupted run's states patched in), and the log-probability or a logit
difference instead of the probability. The restored grid and the endpoints ``p_clean`` /
``p_noised`` of a :class:`TraceResult` are then in the kind's metric.

All restorations of a fact run batched through :mod:`locedit.tracing.batching`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import d_model, module_for, n_layers
from locedit.hooks import forward_hooks
from locedit.kernels import fused_activations
from locedit.data.records import subject_token_range
from locedit.scoring import encode_prompt_target
from locedit.layer_windows import window_bounds
from locedit.registry.kinds import TRACE_KINDS as TRACE_KINDS_REGISTRY
from locedit.tracing.attribution import attribution_grid, attribution_terms
from locedit.tracing.batching import KIND_COMPONENT, Patch, replay_patches
from locedit.tracing.corruption import partner_ids, subject_replace_hook
from locedit.tracing.passes import SuffixArgs, SuffixArgsCache, cached_forward
from locedit.seeds import fact_seed  # noqa: F401  (re-exported: the tracing API)
from locedit.noise import (  # noqa: F401  (re-exported: the tracing API)
    estimate_noise_std,
    make_noise,
    subject_embedding_std,
    subject_noise_hook,
)

logger = logging.getLogger(__name__)

TRACE_KINDS = tuple(KIND_COMPONENT)  # ("hidden", "mlp", "attn")


class SubjectNotFoundError(ValueError):
    """The subject cannot be located among the prompt's tokens."""


@dataclass
class TraceResult:
    """The Causal Tracing grid of one fact for one (kind, window).

    Attributes:
        restored: ``[n_prompt_tokens, n_layers]`` mean probability of the target when the ``kind``
            states at that token for the window centred on that layer are restored (for a kind
            with other settings: the mean of its metric when they are patched).
        p_clean, p_noised: the clean and the corrupted run's value of the same.
        subject_range: subject token span ``[start, end)``.
        tokens: decoded prompt tokens.
        known: whether the model knows the fact, when the one-fact API traced it
            (:func:`locedit.api.knows`).
    """

    kind: str
    window: int
    p_clean: float
    p_noised: float
    restored: np.ndarray
    subject_range: tuple[int, int]
    tokens: list[str]
    noise_std: float
    samples: int
    seed: int
    known: dict | None = None


@dataclass
class ZeroResult:
    """Representation zeroing of one fact: ``p_zeroed[ℓ]`` for the window centred on ℓ."""

    window: int
    p_clean: float
    p_zeroed: np.ndarray  # [n_layers]
    subject_range: tuple[int, int]

    @property
    def effect(self) -> np.ndarray:
        """Fraction of the clean probability removed, ``(p_clean - p_zeroed) / p_clean``."""
        return (self.p_clean - self.p_zeroed) / self.p_clean


class FactTracer:
    """Clean and noised passes of one fact, cached; restorations and zeroing replay from them.

    Args:
        prompt: template with ``{}`` for the subject.
        target: target string (scored with a leading space, :mod:`locedit.scoring`).
        noise_std: σ of the subject-embedding noise.
        samples: number of noise draws.
        seed: noise seed for this fact.
        row_budget: maximum rows per batched replay (memory knob).
        arg_cache: recorded block arguments to share with other facts traced with this model
            (a tracing job passes one to all its facts); a fresh one by default.
        replacement: the partner subject's token ids ``[n_subject]``, whose embeddings replace
            the subject's in the corrupted run (symmetric token replacement,
            :mod:`locedit.tracing.corruption`; ``samples`` must be 1); ``None`` adds Gaussian
            noise.
        contrast: the other answer of the ``logit_diff`` metric under Gaussian noise (the
            fact's ``target_new``); under replacement it is the corrupted run's answer.

    Raises:
        SubjectNotFoundError: the subject cannot be located in the tokenised prompt.
    """

    @torch.inference_mode()
    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompt: str,
        subject: str,
        target: str,
        *,
        noise_std: float,
        samples: int = 10,
        seed: int = 0,
        row_budget: int = 512,
        arg_cache: SuffixArgsCache | None = None,
        replacement: list[int] | None = None,
        contrast: str | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        if replacement is not None and samples != 1:
            raise ValueError(f"a replaced subject is one corrupted run: samples must be 1, got {samples}")
        if arg_cache is not None and arg_cache.model is not model:
            raise ValueError("arg_cache was recorded with another model")
        self.arg_cache = arg_cache or SuffixArgsCache(model)
        self.noise_std, self.samples, self.seed, self.row_budget = (
            noise_std,
            samples,
            seed,
            row_budget,
        )
        try:
            self.subject_range = subject_token_range(tokenizer, prompt, subject)
        except ValueError as err:
            raise SubjectNotFoundError(str(err)) from None
        self.prompt = prompt.format(subject)
        self.prompt_ids, self.target_ids = encode_prompt_target(tokenizer, self.prompt, target)
        P = len(self.prompt_ids)
        self.read_positions = list(range(P - 1, P - 1 + len(self.target_ids)))
        self.n_layers = n_layers(model)
        device = next(model.parameters()).device
        ids = torch.tensor([self.prompt_ids + self.target_ids[:-1]], device=device)  # [1, pos]
        self.input_ids = ids
        s0, s1 = self.subject_range
        self.corruption = "gaussian" if replacement is None else "str"
        if replacement is None:
            self.noise = make_noise(samples, s1 - s0, d_model(model), noise_std, seed)
            # one pass: row 0 clean (zero noise: x + 0 is x), rows 1.. noised
            zero_row = torch.zeros_like(self.noise[:1])
            hook = subject_noise_hook(self.subject_range, torch.cat([zero_row, self.noise]))
        else:
            if len(replacement) != s1 - s0:
                raise ValueError(f"replacement has {len(replacement)} tokens, the subject {s1 - s0}")
            self.noise = None  # no Gaussian draws: attribution patching and o_noise need them
            rows = module_for(model, "embed")(torch.tensor(replacement, device=device))  # [n_subject, d]
            hook = subject_replace_hook(self.subject_range, rows)
        self._contrast_target = contrast
        with fused_activations(model):
            both = cached_forward(
                model,
                ids.expand(1 + samples, -1),
                embed_hook=hook,
                logits_to_keep=len(self.target_ids),  # the read positions end the input
            )
        self.clean, self.noised = both.rows(slice(0, 1)), both.rows(slice(1, None))
        self.additive_blocks = _blocks_are_additive(self.clean)
        self.p_clean = float(self._target_logp(self.clean.logits).exp().mean())
        self.p_noised = float(self._target_logp(self.noised.logits).exp().mean())
        self.tokens = [tokenizer.decode([t]) for t in self.prompt_ids]
        self._atp_terms: dict[str, torch.Tensor] = {}  # attribution terms per restored kind

    def contrast_id(self) -> int:
        """The other token of the ``logit_diff`` metric: under Gaussian noise the first token of
        ``contrast`` (the fact's new object), under replacement the corrupted run's answer;
        either way never the target's first token (then the corrupted run's most probable
        other token)."""
        first = self.target_ids[0]
        if self.corruption == "gaussian" and self._contrast_target:
            _, ids = encode_prompt_target(self.tokenizer, self.prompt, self._contrast_target)
            if ids[0] != first:
                return int(ids[0])
        probs = torch.softmax(self.noised.logits[:, 0].float(), dim=-1).mean(0)  # [vocab]
        probs[first] = -1.0
        return int(probs.argmax())

    def score_fn(self, metric: str):
        """``[rows, n_target, vocab]`` log-probabilities -> ``[rows]`` per-row scores of
        ``metric`` (None: log p(target), the replay's default), and how rows are averaged."""
        if metric == "prob":
            return None, lambda v: float(v.exp().mean())
        if metric == "logprob":
            return None, lambda v: float(v.mean())
        if metric == "logit_diff":
            a, b = self.target_ids[0], self.contrast_id()
            # log-softmax differences at one position are logit differences
            return (lambda logp: logp[:, 0, a] - logp[:, 0, b]), lambda v: float(v.mean())
        raise ValueError(f"unknown tracing metric {metric!r}")

    def _endpoints(self, score, mean) -> tuple[float, float]:
        """The clean and the corrupted run's value of a metric (:meth:`score_fn`'s pair)."""

        def value(logits: torch.Tensor) -> float:
            if score is None:
                return mean(self._target_logp(logits))
            return mean(score(torch.log_softmax(logits.float(), dim=-1)).cpu())

        return value(self.clean.logits), value(self.noised.logits)

    def _target_logp(self, logits: torch.Tensor) -> torch.Tensor:
        """``[rows]`` target-sequence log-probabilities from the read positions' logits
        ``[rows, n_target, vocab]``."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        tgt = torch.tensor(self.target_ids, device=logp.device).view(1, -1, 1)
        return logp.gather(-1, tgt.expand(logp.shape[0], -1, 1)).sum((1, 2)).cpu()

    def suffix_args(self, offset: int) -> SuffixArgs:
        """Block arguments of a pass over positions ``offset..`` (recorded once per length and
        offset in :attr:`arg_cache`)."""
        return self.arg_cache.get(self.input_ids, self.clean, offset)

    def _replay(self, patches, start, component, source, score=None) -> list[torch.Tensor]:
        with fused_activations(self.model):
            return replay_patches(
                self.model,
                patches,
                starts=[start],
                component=component,
                source=source,
                suffix_args=self.suffix_args,
                read_positions=self.read_positions,
                target_ids=self.target_ids,
                row_budget=self.row_budget,
                score=score,
            )

    def restore(self, kind: str = "mlp", window: int = 5) -> TraceResult:
        """The patching grid for ``kind`` and ``window`` (see module docstring): denoising
        replays the corrupted run with clean states restored, noising the clean run (one row
        per corrupted row) with corrupted states patched in."""
        if kind not in KIND_COMPONENT:
            raise ValueError(f"tracing kind must be one of {TRACE_KINDS}, got {kind!r}")
        spec = TRACE_KINDS_REGISTRY[kind]
        if spec.corruption != self.corruption:
            raise ValueError(f"kind {kind!r} corrupts by {spec.corruption}; this tracer by {self.corruption}")
        component, L, P = KIND_COMPONENT[kind], self.n_layers, len(self.prompt_ids)
        if spec.direction == "denoise":
            base, other = self.noised, self.clean
        else:
            base, other = self.clean.expand(self.noised.block_in[0].shape[0]), self.noised
        score, mean = self.score_fn(spec.metric)
        p_clean, p_noised = self._endpoints(score, mean)
        cells = [(t, c) for t in range(self.subject_range[0], P) for c in range(L)]
        patches = []
        for t, c in cells:
            a, b = window_bounds(c, window, L)
            init = self._first_layer_state(component, base, other, t, a)
            if init is None:
                patches.append(Patch(a, b, positions=(t,), offset=t))
            else:  # layer a is already accounted for: start above it
                patches.append(Patch(a + 1, b, positions=(t,), offset=t, init=init))
        lps = self._replay(patches, base, component, other.outputs[component], score)
        # before the subject both runs agree: patching there leaves the start run's value
        fill = p_noised if spec.direction == "denoise" else p_clean
        restored = np.full((P, L), fill, dtype=np.float64)
        for (t, c), lp in zip(cells, lps):
            restored[t, c] = mean(lp)
        return TraceResult(kind, window, p_clean, p_noised, restored, self.subject_range,
                           self.tokens, self.noise_std, self.samples, self.seed)  # fmt: skip

    def trace(self, kind: str = "mlp", window: int = 5) -> TraceResult:
        """The grid of a run: :meth:`attribute` for an estimating kind, else :meth:`restore`."""
        if kind in TRACE_KINDS_REGISTRY and TRACE_KINDS_REGISTRY[kind].estimates is not None:
            return self.attribute(window, kind)
        return self.restore(kind, window)

    def attribute(self, window: int = 5, kind: str = "atp") -> TraceResult:
        """Attribution patching's estimate of :meth:`restore` for the kind ``kind`` estimates
        (:mod:`locedit.tracing.attribution`): one forward and backward pass per fact, shared by
        every window."""
        exact = TRACE_KINDS_REGISTRY[kind].estimates
        if exact is None:
            raise ValueError(f"tracing kind {kind!r} is not an attribution estimate")
        if exact not in self._atp_terms:
            self._atp_terms[exact] = attribution_terms(
                self.model, self.input_ids, self.subject_range, self.noise, self.target_ids,
                component=KIND_COMPONENT[exact],
            )  # fmt: skip
        grid = attribution_grid(
            self._atp_terms[exact], window, len(self.prompt_ids), self.subject_range[0], self.p_noised
        )
        return TraceResult(kind, window, self.p_clean, self.p_noised, grid, self.subject_range,
                           self.tokens, self.noise_std, self.samples, self.seed)  # fmt: skip

    def _first_layer_state(self, component: str, base, other, t: int, a: int):
        """The patched run's output of block ``a`` (positions ``t..``) without running it, or
        ``None`` when it must be computed.

        Below and at layer ``a`` only token t differs from the start run ``base``, and only in
        block a's output: when the block output is patched it is ``other``'s; when the MLP
        output is, it is ``base``'s output with ``base``'s MLP contribution swapped for
        ``other``'s, valid when a block's output is input + attention + MLP (checked on the
        clean pass). A patched attention output needs the MLP recomputed.
        """
        if component == "block":

            def init():
                state = base.outputs["block"][a][:, t:].clone()
                state[:, 0] = other.outputs["block"][a][:, t]
                return state

            return init
        if component == "mlp" and self.additive_blocks:

            def init():
                state = base.outputs["block"][a][:, t:].clone()
                state[:, 0] += other.outputs["mlp"][a][:, t] - base.outputs["mlp"][a][:, t]
                return state

            return init
        return None

    def zero(self, window: int = 5) -> ZeroResult:
        """Representation zeroing of the MLP outputs at the subject tokens (paper App. B)."""
        L = self.n_layers
        subject = tuple(range(*self.subject_range))
        patches = [
            Patch(*window_bounds(c, window, L), positions=subject, offset=subject[0])
            for c in range(L)
        ]
        lps = self._replay(patches, self.clean, "mlp", None)
        p_zeroed = np.array([float(lp.exp().mean()) for lp in lps])
        return ZeroResult(window, self.p_clean, p_zeroed, self.subject_range)

    @torch.no_grad()
    def o_noise(self, max_new_tokens: int = 8) -> str:
        """The model's greedy first word under the noised subject (see module docstring)."""
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        hook = subject_noise_hook(self.subject_range, self.noise)
        eos = tok.eos_token_id
        gen: list[int] = []
        first_probs = None
        with_hook = [(module_for(model, "embed"), hook)]
        for _ in range(max_new_tokens):
            ids = torch.tensor([self.prompt_ids + gen], device=device).expand(self.samples, -1)
            with forward_hooks(with_hook), fused_activations(model):
                out = model(input_ids=ids, use_cache=False, logits_to_keep=1)
            logits = out.logits[:, -1]  # [samples, vocab]
            probs = torch.softmax(logits.float(), dim=-1).mean(0)
            if first_probs is None:
                first_probs = probs
            nxt = int(probs.argmax())
            if nxt == eos:
                break
            gen.append(nxt)
            if _WORD_DONE.match(tok.decode(gen)):
                break
        word = first_word(tok.decode(gen))
        if word:
            return word
        for cand in torch.topk(first_probs, min(200, first_probs.numel())).indices.tolist():
            word = first_word(tok.decode([cand]))
            if word:
                return word
        raise RuntimeError(f"no word among the top-200 noised next tokens of {self.prompt_ids}")


def _blocks_are_additive(clean) -> bool:
    """Whether every block's output is input + attention output + MLP output (pre-norm
    residual blocks, parallel or sequential), up to float16 rounding; a block of another shape
    (e.g. a norm after the MLP) is off by O(1) and fails."""
    for j, out in enumerate(clean.outputs["block"]):
        parts = (
            clean.block_in[j].float()
            + clean.outputs["attn"][j].float()
            + clean.outputs["mlp"][j].float()
        )
        err = float((out.float() - parts).norm())
        if not err <= 1e-2 * float(out.float().norm()):
            return False
    return True


_BOUNDARY = r"[\s.,;:!?\"()\[\]]"
_WORD_DONE = re.compile(rf"\s*[^\s.,;:!?\"()\[\]]+{_BOUNDARY}")
_WORD = re.compile(rf"\s*([^\s.,;:!?\"()\[\]]+)")


def first_word(text: str) -> str:
    """The first word of ``text`` (no surrounding whitespace or punctuation), or ``""``."""
    m = _WORD.match(text)
    return m.group(1) if m else ""


def trace_fact(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    subject: str,
    target: str,
    *,
    kind: str = "mlp",
    window: int = 5,
    noise_std: float | None,
    samples: int = 10,
    seed: int = 0,
    row_budget: int = 512,
    partner: str | None = None,
    contrast: str | None = None,
) -> TraceResult:
    """Causal Tracing of one fact; ``prompt`` is a template with ``{}`` for the subject.

    Args:
        noise_std: σ of the subject noise. ``None`` derives it by ROME's rule from this fact's
            subject alone (3 × std of its token embeddings); the workflow derives it once over the
            whole dataset instead (:func:`estimate_noise_std`). The value used is recorded in
            the result.
        partner: the subject that replaces ``subject`` for a kind corrupting by symmetric token
            replacement (as many tokens in the prompt; :mod:`locedit.tracing.corruption`).
        contrast: the other answer of a ``logit_diff`` kind under Gaussian noise.
    Returns:
        A :class:`TraceResult` with ``restored`` ``[n_prompt_tokens, n_layers]``.
    """
    common = dict(row_budget=row_budget, contrast=contrast)
    if kind in TRACE_KINDS_REGISTRY and TRACE_KINDS_REGISTRY[kind].corruption == "str":
        if not partner:
            raise ValueError(f"tracing kind {kind!r} replaces the subject: name a partner subject")
        tracer = FactTracer(model, tokenizer, prompt, subject, target, noise_std=0.0, samples=1,
                            replacement=partner_ids(tokenizer, prompt, subject, partner), **common)  # fmt: skip
        return tracer.trace(kind, window)
    if noise_std is None:
        noise_std = estimate_noise_std(model, tokenizer, [(prompt, subject)])
    tracer = FactTracer(model, tokenizer, prompt, subject, target, noise_std=noise_std,
                        samples=samples, seed=seed, **common)  # fmt: skip
    return tracer.trace(kind, window)


def zero_fact(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    subject: str,
    target: str,
    *,
    window: int = 5,
    row_budget: int = 512,
) -> ZeroResult:
    """Representation zeroing of one fact (no noise involved)."""
    tracer = FactTracer(
        model, tokenizer, prompt, subject, target, noise_std=0.0, samples=1, row_budget=row_budget
    )
    return tracer.zero(window)
