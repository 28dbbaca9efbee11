"""Shared key/value machinery of ROME and MEMIT: context templates, keys k*, target vectors v*/z.

Vocabulary (ROME §3.1, MEMIT Alg. 1):

* A *context template* is a string with one ``{}`` slot for the rewrite prompt, e.g.
  ``"The team won the game. {}"``; ``"{}"`` is the bare prompt. Filling it with the rewrite prompt
  (which has its own ``{}`` for the subject) gives a *prompt template*. Templates are sampled
  from the model once per model (:func:`generate_context_templates`) and reused by every edit.
* The *key* at a layer is the input of the MLP down-projection (``mlp_out``) at the subject's last
  token; k* averages it over the context templates (ROME Eq. 3).
* The *value* is optimised as an additive ``delta`` on a module output at the subject's last
  token of every prompt (``mlp_out`` output for ROME, the block output = residual stream for
  MEMIT's z), minimising the target's NLL over the context prompts + ``kl_factor`` · KL on the
  ``"{subject} is a"`` prompt + a weight decay, with ``‖delta‖`` clamped (ROME Eq. 4; the
  authors' ``compute_v`` / ``compute_z``). Fact erasure minimises the target probability instead.
* Fact forcing (``EditRequest.noise``) noises the subject's own token span in *every* prompt a
  method runs (context prompts, KL prompt, bare prompt) — the authors' code noised the bare
  prompt's span in every row, which is wrong for prefixed prompts (reference-implementations §1.9.5).

Everything here is deterministic for fixed inputs: delta starts at zero and nothing is sampled
except in :func:`generate_context_templates`, which takes an explicit seed.
"""

from __future__ import annotations

import contextlib
import logging
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import d_model, module_for, untuple
from locedit.editing.hparams import FACT_TOKENS, ValueHparams
from locedit.registry.methods import MEMIT, ROME
from locedit.editing.types import EditRequest
from locedit.hooks import forward_hooks
from locedit.noise import noised_subject
from locedit.data.records import subject_token_range
from locedit.scoring import encode_prompt, encode_prompt_target

logger = logging.getLogger(__name__)

#: The essence-drift prompt of ROME Eq. 4b.
KL_PROMPT = "{} is a"

#: Lookup-token strategies: the subject's last token (paper) or the prompt's last token (ablation).


# --------------------------------------------------------------------------------------------
# Prompts and token positions
# --------------------------------------------------------------------------------------------


def fill_template(context_template: str, prompt: str) -> str:
    """Put the rewrite ``prompt`` (with its ``{}`` subject slot) into a context template's slot."""
    if context_template.count("{}") != 1:
        raise ValueError(f"context template {context_template!r} must contain exactly one '{{}}'")
    return context_template.replace("{}", prompt)


def lookup_index(
    tok: PreTrainedTokenizerBase, prompt_template: str, subject: str, fact_token: str
) -> int:
    """Token index where the fact is looked up in ``prompt_template.format(subject)``."""
    if fact_token == "subject_last":
        return subject_token_range(tok, prompt_template, subject)[1] - 1
    if fact_token == "last":
        return len(encode_prompt(tok, prompt_template.format(subject))) - 1
    raise ValueError(f"fact_token must be one of {FACT_TOKENS}, got {fact_token!r}")


def _fit_noise(noise: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Noise rows for the longest span; a subject can tokenise longer after a context prefix.

    The extra rows repeat the given rows cyclically (deterministic), with a warning.
    """
    need = max(e - s for s, e in spans)
    if need <= noise.shape[0]:
        return noise
    logger.warning(
        "subject spans up to %d tokens but noise has %d rows; repeating rows", need, noise.shape[0]
    )
    reps = -(-need // noise.shape[0])
    return noise.repeat(reps, 1)[:need]


@contextlib.contextmanager
def subject_noise_ctx(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    prompt_templates: Sequence[str],
) -> Iterator[None]:
    """Fact forcing: noise each row's own subject span; a no-op when ``request.noise`` is None."""
    if request.noise is None:
        yield
        return
    spans = [subject_token_range(tok, t, request.subject) for t in prompt_templates]
    with noised_subject(model, spans, _fit_noise(request.noise, spans)):
        yield


@dataclass
class PaddedBatch:
    """Right-padded token rows. ``input_ids``/``attention_mask``: ``[batch, pos]``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device) -> PaddedBatch:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return PaddedBatch(ids.to(device), mask.to(device))


def _pad_id(tok: PreTrainedTokenizerBase) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# Keys and module values at the lookup token
# --------------------------------------------------------------------------------------------


def module_io_at_lookup(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    prompt_templates: Sequence[str],
    layer: int,
    *,
    component: str = "mlp_out",
    fact_token: str = "subject_last",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of ``component`` at ``layer`` at each prompt's lookup token.

    Runs under the request's subject noise (fact forcing), through the whole model as the
    authors' code does (this is the per-fact path, the engine's baseline).

    Returns:
        ``(inputs [n_prompts, d_in], outputs [n_prompts, d_out])`` in float32. For ``mlp_out``
        ``d_in`` = d_mlp (the keys) and ``d_out`` = d_model; for ``block`` both are d_model
        (the input is the residual stream entering the block; None if passed as a keyword).
    """
    got = lookup_reads(
        model, tok, request, prompt_templates, [(component, layer)], fact_token=fact_token, stop=False
    )
    return got[(component, layer)]


class _StopPass(Exception):
    """Raised once a pass has computed every module it reads."""


@torch.no_grad()
def lookup_reads(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    prompt_templates: Sequence[str],
    reads: Sequence[tuple[str, int]],
    *,
    fact_token: str = "subject_last",
    stop: bool = True,
) -> dict[tuple[str, int], tuple[torch.Tensor | None, torch.Tensor]]:
    """Inputs and outputs of several ``(component, layer)`` at each prompt's lookup token, from
    **one** pass under the request's subject noise, stopped after the highest block read
    (nothing above it, nor the unembedding, is computed) unless ``stop`` is false.

    Returns:
        ``{(component, layer): (inputs [n_prompts, d_in] | None, outputs [n_prompts, d_out])}``
        in float32 (see :func:`module_io_at_lookup`).
    """
    texts = [t.format(request.subject) for t in prompt_templates]
    idx = [lookup_index(tok, t, request.subject, fact_token) for t in prompt_templates]
    batch = pad_rows([encode_prompt(tok, x) for x in texts], _pad_id(tok), _device(model))
    rows, pos = torch.arange(len(texts)), torch.tensor(idx)
    got: dict = {}

    def read(key):
        def hook(module, inputs, output):
            # A block may receive its hidden states as a keyword (no positional input); only
            # MEMIT's residual reads use blocks, and they need the output alone.
            got[key] = (inputs[0][rows, pos].float() if inputs else None, untuple(output)[rows, pos].float())

        return hook

    def halt(module, inputs, output):
        raise _StopPass

    hooks = [(module_for(model, c, layer), read((c, layer))) for c, layer in reads]
    if stop:
        hooks.append((module_for(model, "block", max(layer for _, layer in reads)), halt))
    with subject_noise_ctx(model, tok, request, prompt_templates), forward_hooks(hooks):
        try:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        except _StopPass:
            pass
    return got


def average_keys(keys: torch.Tensor, context_templates: Sequence[str], how: str) -> torch.Tensor:
    """k* from per-template keys ``[n_templates, d_mlp]`` → ``[d_mlp]``.

    ``flat``: plain mean (ROME ``compute_u``). ``grouped``: mean of the bare-prompt keys and the
    mean of the prefixed ones, i.e. the two context "types" weigh equally (MEMIT ``compute_ks``).
    """
    if how == "flat":
        return keys.mean(0)
    if how != "grouped":
        raise ValueError(f"key_average must be 'flat' or 'grouped', got {how!r}")
    bare = torch.tensor([t == "{}" for t in context_templates])
    groups = [keys[bare], keys[~bare]]
    return torch.stack([g.mean(0) for g in groups if len(g)]).mean(0)


# --------------------------------------------------------------------------------------------
# Value optimisation
# --------------------------------------------------------------------------------------------


@dataclass
class ValueResult:
    """Outcome of :func:`optimize_value`.

    Attributes:
        target: ``[d]`` float32, the optimised value (init + delta) at the bare prompt.
        init: ``[d]`` float32, the unedited module output at the bare prompt's lookup token.
        diagnostics: scalars (loss terms, target probability, steps, norms).
        lookup_in / lookup_out: ``[n_prompts, d_in]`` / ``[n_prompts, d_out]``, the module's
            unedited input/output at each rewrite prompt's lookup token, when the optimiser
            recorded them (the batched engine, :mod:`locedit.editing.engine`); else None.
    """

    target: torch.Tensor
    init: torch.Tensor
    diagnostics: dict
    lookup_in: torch.Tensor | None = None
    lookup_out: torch.Tensor | None = None


def optimize_value(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    request: EditRequest,
    context_templates: Sequence[str],
    layer: int,
    *,
    component: str,
    hp: ValueHparams,
) -> ValueResult:
    """Optimise ``delta`` added to ``component``'s output at ``layer`` (ROME ``compute_v``).

    Args:
        context_templates: the first should be ``"{}"`` (the bare prompt): its row defines the
            initial value that ``clamp_norm_factor`` and the weight decay are relative to.
        component: ``mlp_out`` (ROME: v*) or ``block`` (MEMIT: z on the residual stream).
        hp: ROME's or MEMIT's hyperparameters (``v_num_grad_steps, v_lr, v_weight_decay,
            kl_factor, clamp_norm_factor, early_stop_loss, fact_token`` are read).

    The rewrite prompts are ``fill_template(c, request.prompt)`` for each context template, each
    teacher-forced with ``request.target``; one extra row is the KL prompt ``"{subject} is a"``.
    As in the authors' code the last iteration only evaluates (``v_num_grad_steps`` forward passes,
    one fewer Adam steps); early stopping (``loss < early_stop_loss``) is off for erasure.
    """
    device = _device(model)
    fact_token = hp.fact_token
    templates = [fill_template(c, request.prompt) for c in context_templates]
    rows, read_pos, target_ids, lookup = [], [], [], []
    for t in templates:
        p_ids, t_ids = encode_prompt_target(tok, t.format(request.subject), request.target)
        rows.append(p_ids + t_ids[:-1])
        read_pos.append(list(range(len(p_ids) - 1, len(p_ids) - 1 + len(t_ids))))
        target_ids.append(t_ids)
        lookup.append(lookup_index(tok, t, request.subject, fact_token))
    all_templates = templates + [KL_PROMPT]
    rows.append(encode_prompt(tok, KL_PROMPT.format(request.subject)))
    lookup.append(lookup_index(tok, KL_PROMPT, request.subject, fact_token))
    batch = pad_rows(rows, _pad_id(tok), device)
    n_rw = len(templates)

    # Gather indices of every target token: row, position, token id.
    g_row = torch.tensor([i for i, p in enumerate(read_pos) for _ in p], device=device)
    g_pos = torch.tensor([q for p in read_pos for q in p], device=device)
    g_tok = torch.tensor([t for ts in target_ids for t in ts], device=device)
    n_tgt = torch.tensor([len(t) for t in target_ids], dtype=torch.float32, device=device)
    lk_rows = torch.arange(len(rows), device=device)
    lk_pos = torch.tensor(lookup, device=device)
    # One-hot [batch, pos, 1] of the lookup tokens, where delta is added.
    where = torch.zeros(batch.input_ids.shape + (1,), device=device)
    where[lk_rows, lk_pos] = 1.0

    if component not in ("block", "mlp_out"):
        raise ValueError(f"values are optimised at block or mlp_out outputs, got {component!r}")
    delta = torch.zeros(d_model(model), dtype=torch.float32, device=device, requires_grad=True)
    state: dict[str, torch.Tensor] = {}

    def add_delta(module, inputs, output):
        h = untuple(output)  # [batch, pos, d]
        if "init" not in state:
            state["init"] = h[0, lookup[0]].detach().float().clone()
        h = h + (where * delta).to(h.dtype)
        return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    n_steps = int(hp.v_num_grad_steps)
    early = hp.early_stop_loss
    diag: dict = {}
    it = 0
    with subject_noise_ctx(model, tok, request, all_templates):
        with forward_hooks([(module_for(model, component, layer), add_delta)]):
            for it in range(n_steps):
                opt.zero_grad()
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                # Normalise only the positions read (a 50k vocabulary over every position costs
                # more than the model on small models).
                tgt_lp = torch.log_softmax(logits[g_row, g_pos].float(), dim=-1)  # [n_tok, vocab]
                tok_lp = tgt_lp.gather(1, g_tok[:, None])[:, 0]  # [n target tokens over rewrite rows]
                nll_each = -torch.zeros(n_rw, device=device).index_add(0, g_row, tok_lp) / n_tgt
                nll = nll_each.mean()
                kl_lp = torch.log_softmax(logits[n_rw, lookup[-1]][None].float(), dim=-1)  # [1, vocab]
                if "kl_init" not in state:
                    state["kl_init"] = kl_lp.detach().clone()
                kl = hp.kl_factor * F.kl_div(
                    state["kl_init"], kl_lp, log_target=True, reduction="batchmean"
                )
                wd = hp.v_weight_decay * (delta.norm() / state["init"].norm() ** 2)
                main = torch.exp(-nll) if request.minimize else nll
                loss = main + kl + wd
                diag = {
                    "loss": loss.detach().item(),
                    "nll": nll.detach().item(),
                    "kl": kl.detach().item(),
                    "weight_decay": wd.detach().item(),
                    "p_target": torch.exp(-nll_each.detach()).mean().item(),
                    # the bare prompt's row: what the edit must deliver at evaluation
                    "p_target_prompt": torch.exp(-nll_each[0].detach()).item(),
                }
                if it == 0:
                    diag0 = dict(diag)
                if early is not None and not request.minimize and diag["loss"] < early:
                    break
                if it == n_steps - 1:
                    break
                loss.backward()
                opt.step()
                max_norm = hp.clamp_norm_factor * state["init"].norm()
                with torch.no_grad():
                    if delta.norm() > max_norm:
                        delta.mul_(max_norm / delta.norm())
    init = state["init"]
    diag.update(
        {
            "n_forward": it + 1,
            "p_target_init": diag0["p_target"],
            "delta_norm": float(delta.detach().norm()),
            "init_norm": float(init.norm()),
        }
    )
    logger.debug("case %s value optimisation: %s", request.case_id, diag)
    return ValueResult(target=(init + delta.detach()).float(), init=init, diagnostics=diag)


# --------------------------------------------------------------------------------------------
# Context templates
# --------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """ROME ``generate_fast`` post-processing, plus removing braces (they would break format)."""
    text = unicodedata.normalize("NFKD", text).replace("\n", " ")
    return text.replace("{", " ").replace("}", " ")


@torch.no_grad()
def sample_texts(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    prefix_ids: Sequence[int],
    n: int,
    max_out_len: int,
    *,
    top_k: int,
    generator: torch.Generator,
) -> list[str]:
    """``n`` top-k samples from ``prefix_ids``, ``max_out_len`` tokens in total (prefix included).

    Like ROME's ``generate_fast``: the decoded text includes the prefix's text (special tokens
    dropped). Sampling draws from ``generator`` on the CPU, so it is reproducible on any device.
    """
    device = _device(model)
    ids = torch.tensor([list(prefix_ids)] * n, dtype=torch.long, device=device)
    while ids.shape[1] < max_out_len:
        logits = model(input_ids=ids).logits[:, -1].float().cpu()  # [n, vocab]
        vals, idx = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
        choice = torch.multinomial(torch.softmax(vals, -1), 1, generator=generator)  # [n, 1]
        nxt = idx.gather(1, choice).to(device)
        ids = torch.cat([ids, nxt], dim=1)
    return [_clean(tok.decode(r.tolist(), skip_special_tokens=True)) for r in ids]


def generate_context_templates(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    *,
    seed: int,
    top_k: int,
    rome_lengths: Sequence[Sequence[int]],
    memit_prompts: Sequence[str],
    memit_lengths: Sequence[Sequence[int]],
) -> dict[str, list[str]]:
    """Context templates of ROME and MEMIT, sampled once per model.

    Args:
        rome_lengths: ``[[max_out_len, n], ...]``: ROME samples ``n`` texts of ``max_out_len``
            tokens from the BOS/EOS token for each pair (``[[5, 10], [10, 10]]``: 21 templates).
        memit_prompts: MEMIT's seed words (``The, Therefore, Because, I, You``).
        memit_lengths: ``[[max_out_len, n_total], ...]``: ``n_total // len(memit_prompts)`` samples
            per seed word (``[[10, 5]]``: 6 templates).

    Returns:
        ``{ROME's list name: [...], MEMIT's: [...]}`` (``Method.templates`` of the registry);
        each list starts with ``"{}"`` (the bare prompt) and the rest are ``text + ". {}"``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to sample from")
    rome = ["{}"]
    for length, n in rome_lengths:
        rome += [t + ". {}" for t in sample_texts(model, tok, [start], n, length, top_k=top_k, generator=gen)]
    memit = ["{}"]
    for length, n_total in memit_lengths:
        for word in memit_prompts:
            ids = tok(word)["input_ids"]
            k = n_total // len(memit_prompts)
            memit += [t + ". {}" for t in sample_texts(model, tok, ids, k, length, top_k=top_k, generator=gen)]
    return {ROME.templates: rome, MEMIT.templates: memit}
