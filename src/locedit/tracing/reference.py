"""The straightforward Causal Tracing baseline: one forward pass per (token, layer).

This mirrors the authors' ``trace_with_patch`` / ``trace_important_window`` (ROME, belief-
localization): for every traced token t and centre layer ℓ, one full forward pass over a batch of
``1 + samples`` copies of prompt+target (row 0 clean, rows 1.. noised at the subject embeddings),
where the ``kind`` outputs of rows 1.. at token t in the window of layers are overwritten with row
0's. Probabilities are read from the full logits and averaged over the noised rows. Like the
authors' loop (``for tnum in range(ntoks)``) it traces every prompt token, including those before
the subject, whose restoration is a no-op; ``from_subject=True`` starts at the subject instead (one
of the batched engine's savings, given to the baseline to measure the others alone).

It is the reference the batched engine (:mod:`locedit.tracing.trace`) is tested and benchmarked
against (``tests/unit/test_tracing.py``, ``tests/models/test_adapters.py`` for every registered
architecture, ``benchmarks/bench_tracing.py``). It shares the study's definitions with the
engine (subject location, target encoding, the window rule, the noise draws, module paths from
the adapter registry) and none of its code (no cached passes, replays or batching), so results
agree up to float rounding. (``tests/reference_tracer.py`` re-derives even the definitions from
the documentation alone, for GPT-2 and Llama.)
"""

from __future__ import annotations

import numpy as np
import torch

from locedit.adapters import d_model, module_for, n_layers, untuple
from locedit.hooks import forward_hooks
from locedit.data.records import subject_token_range
from locedit.scoring import encode_prompt_target
from locedit.layer_windows import window_bounds as window_layers
from locedit.noise import make_noise
from locedit.registry.kinds import TRACE_KINDS


@torch.no_grad()
def naive_trace(
    model,
    tokenizer,
    prompt,
    subject,
    target,
    *,
    kind="mlp",
    window=5,
    noise_std,
    samples=10,
    seed=0,
    from_subject=False,
):
    """``(p_clean, p_noised, restored [n_prompt_tokens, n_layers])`` with one pass per cell."""
    s0, s1 = subject_token_range(tokenizer, prompt, subject)
    p_ids, t_ids = encode_prompt_target(tokenizer, prompt.format(subject), target)
    P, L = len(p_ids), n_layers(model)
    device = next(model.parameters()).device
    ids = torch.tensor([p_ids + t_ids[:-1]] * (samples + 1), device=device)
    reads = list(range(P - 1, P - 1 + len(t_ids)))
    noise = make_noise(samples, s1 - s0, d_model(model), noise_std, seed)

    def embed_hook(module, inputs, output):
        output = output.clone()
        output[1:, s0:s1] += noise.to(output.device, output.dtype)
        return output

    def patch_hook(t):
        def fn(module, inputs, output):
            h = untuple(output)
            h[1:, t] = h[0, t]  # in place, as the authors' code does
            return output

        return fn

    def run(patch_layers=(), t=None):
        hooks = [(module_for(model, "embed"), embed_hook)]
        comp = TRACE_KINDS[kind].component
        hooks += [(module_for(model, comp, j), patch_hook(t)) for j in patch_layers]
        with forward_hooks(hooks):
            logits = model(input_ids=ids, use_cache=False).logits
        logp = torch.log_softmax(logits[:, reads].float(), -1)
        lp = logp[:, torch.arange(len(t_ids)), torch.tensor(t_ids)].sum(-1)
        return lp.exp().cpu()

    base = run()
    p_clean, p_noised = float(base[0]), float(base[1:].mean())
    restored = np.full((P, L), p_noised)
    for t in range(s0 if from_subject else 0, P):
        for c in range(L):
            a, b = window_layers(c, window, L)
            restored[t, c] = float(run(range(a, b), t)[1:].mean())
    return p_clean, p_noised, restored
