"""A reference Causal Tracer for GPT-2 and Llama that shares no code with ``src/locedit``.

Written from the paper and the README's documented rules alone, so that agreement with the
engine checks them, not a shared helper: the subject located by decoding tokens (the authors'
``find_token_range``, not character offsets), the window ``[ℓ - w//2, ℓ + ⌈w/2⌉)`` clipped, the
noise of fact ``c`` drawn from ``torch.Generator().manual_seed(seed·1000003 + c)`` as
``randn(samples, n_subject_tokens, d_model) · σ``, restoration by one full forward pass per
(token, centre layer) with the models' own module paths. Slow by design; for small tests only.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def subject_tokens(tokenizer, prompt: str, subject: str) -> tuple[list[int], int, int]:
    """``(ids, start, end)``: the ids of ``prompt.format(subject)`` and the tokens whose decoded
    text overlaps the subject's characters (found by decoding, token by token)."""
    text = prompt.replace("{}", subject, 1)
    ids = tokenizer(text)["input_ids"]
    begin = prompt.index("{}")
    end = begin + len(subject)
    pos, inside = 0, []
    for i in range(len(ids)):
        piece = tokenizer.decode(ids[i : i + 1])
        if pos < end and pos + len(piece) > begin and piece:
            inside.append(i)
        pos += len(piece)
    assert tokenizer.decode(ids) == text, "decoding must reproduce the text for this search"
    return ids, inside[0], inside[-1] + 1


def target_tokens(tokenizer, text: str, target: str) -> list[int]:
    prompt_ids = tokenizer(text)["input_ids"]
    joint = tokenizer(text + " " + target.strip())["input_ids"]
    assert joint[: len(prompt_ids)] == prompt_ids, "this reference needs prefix-stable tokenisation"
    return joint[len(prompt_ids) :]


def window(centre: int, width: int, n_layers: int) -> range:
    return range(max(0, centre - width // 2), min(n_layers, centre + math.ceil(width / 2)))


def model_parts(model):
    """``(blocks, embedding)``: GPT-2's module paths, or a Llama's (model.model.layers,
    embed_tokens)."""
    body = model.transformer if hasattr(model, "transformer") else model.model
    return (body.h if hasattr(body, "h") else body.layers), (body.wte if hasattr(body, "wte") else body.embed_tokens)


def patched_module(block, kind):
    """The module of ``block`` whose output a ``kind`` restoration overwrites."""
    attn = block.attn if hasattr(block, "attn") else block.self_attn
    return {"mlp": block.mlp, "attn": attn, "hidden": block}[kind]


def noise_hook(noise, rows: slice, s0: int, s1: int):
    """Embedding hook adding ``noise`` to ``rows`` at the subject's positions."""

    def hook(module, args, out):
        out = out.clone()
        out[rows, s0:s1] += noise
        return out

    return hook


@torch.no_grad()
def reference_trace(model, tokenizer, prompt, subject, target, *, kind, width, noise_std,
                    samples, config_seed, case_id, centres=None):
    """``(p_clean, p_noised, restored [n_prompt_tokens, n_layers], (start, end))``; with
    ``centres``, only those window centres are restored (the other columns are NaN)."""
    ids, s0, s1 = subject_tokens(tokenizer, prompt, subject)
    t_ids = target_tokens(tokenizer, prompt.replace("{}", subject, 1), target)
    blocks, embed = model_parts(model)
    n_layers, d = len(blocks), embed.weight.shape[1]
    gen = torch.Generator().manual_seed(config_seed * 1000003 + case_id)
    noise = torch.randn(samples, s1 - s0, d, generator=gen) * noise_std
    batch = torch.tensor([ids + t_ids[:-1]] * (samples + 1))

    def restore_at(token):
        def hook(mod, args, out):
            h = out[0] if isinstance(out, tuple) else out
            h[1:, token] = h[0, token]
            return out

        return hook

    def prob(layers=(), token=None):
        handles = [embed.register_forward_hook(noise_hook(noise, slice(1, None), s0, s1))]
        handles += [patched_module(blocks[j], kind).register_forward_hook(restore_at(token)) for j in layers]
        try:
            logits = model(input_ids=batch, use_cache=False).logits.double()
        finally:
            for h in handles:
                h.remove()
        logp = torch.log_softmax(logits, -1)
        total = sum(logp[:, len(ids) - 1 + k, t] for k, t in enumerate(t_ids))
        return total.exp()

    base = prob()
    p_clean, p_noised = float(base[0]), float(base[1:].mean())
    restored = np.full((len(ids), n_layers), np.nan)
    for token in range(len(ids)):
        for centre in range(n_layers) if centres is None else centres:
            restored[token, centre] = float(prob(window(centre, width, n_layers), token)[1:].mean())
    return p_clean, p_noised, restored, (s0, s1)


@torch.no_grad()
def reference_patch(model, tokenizer, prompt, subject, target, *, kind, width, direction, metric,
                    noise_std=0.0, samples=1, config_seed=0, case_id=0, partner=None, contrast=None):
    """Activation patching of one fact with the settings beyond the paper, one full forward pass
    per (token, centre layer): ``(clean value, corrupted value, grid [n_prompt_tokens, n_layers])``.

    The batch holds ``n`` clean rows and ``n`` corrupted rows (``n`` = samples, 1 for a partner
    subject): the corrupted rows add Gaussian noise to the subject's embeddings, or, with
    ``partner``, *read the partner's tokens* (its ids in the prompt, which must differ only in the
    subject's span). Denoising copies clean states into the corrupted rows, noising corrupted
    states into the clean rows; the patched half is read. ``metric``: ``prob`` (mean of p),
    ``logprob`` (mean of log p) or ``logit_diff`` (first target token's logit minus
    ``contrast``'s first token's, or minus the corrupted run's most likely other token's).
    """
    ids, s0, s1 = subject_tokens(tokenizer, prompt, subject)
    text = prompt.replace("{}", subject, 1)
    t_ids = target_tokens(tokenizer, text, target)
    blocks, embed = model_parts(model)
    n_layers, d = len(blocks), embed.weight.shape[1]
    if partner is None:
        gen = torch.Generator().manual_seed(config_seed * 1000003 + case_id)
        noise = torch.randn(samples, s1 - s0, d, generator=gen) * noise_std
        n, bad = samples, ids
    else:
        n, noise = 1, None
        bad = tokenizer(prompt.replace("{}", partner, 1))["input_ids"]
        assert len(bad) == len(ids) and bad[:s0] == ids[:s0] and bad[s1:] == ids[s1:]
    batch = torch.tensor([ids + t_ids[:-1]] * n + [bad + t_ids[:-1]] * n)
    dst = slice(n, 2 * n) if direction == "denoise" else slice(0, n)
    src = slice(0, n) if direction == "denoise" else slice(n, 2 * n)

    def patch_at(token):
        def hook(mod, args, out):
            h = out[0] if isinstance(out, tuple) else out
            h[dst, token] = h[src, token]
            return out

        return hook

    def run(layers=(), token=None):
        handles = [embed.register_forward_hook(noise_hook(noise, slice(n, None), s0, s1))] if noise is not None else []
        handles += [patched_module(blocks[j], kind).register_forward_hook(patch_at(token)) for j in layers]
        try:
            logits = model(input_ids=batch, use_cache=False).logits.double()
        finally:
            for h in handles:
                h.remove()
        return torch.log_softmax(logits, -1)

    base = run()
    first = t_ids[0]
    if metric == "logit_diff":
        other = target_tokens(tokenizer, text, contrast)[0] if contrast is not None else None
        if other is None or other == first:
            probs = base[n:, len(ids) - 1].exp().mean(0)
            probs[first] = -1
            other = int(probs.argmax())

    def value(logp, rows):
        if metric == "logit_diff":
            return float((logp[rows, len(ids) - 1, first] - logp[rows, len(ids) - 1, other]).mean())
        lp = sum(logp[rows, len(ids) - 1 + k, t] for k, t in enumerate(t_ids))
        return float(lp.exp().mean() if metric == "prob" else lp.mean())

    clean, corrupt = value(base, slice(0, n)), value(base, slice(n, 2 * n))
    grid = np.full((len(ids), n_layers), corrupt if direction == "denoise" else clean)
    for token in range(s0, len(ids)):
        for centre in range(n_layers):
            grid[token, centre] = value(run(window(centre, width, n_layers), token), dst)
    return clean, corrupt, grid
