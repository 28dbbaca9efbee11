"""Attribution patching (AtP): a first-order estimate of every Causal Tracing restoration.

Nanda (2023); AtP*, Kramár et al. (2024). Restoring the clean value of a module's output ``a`` at
token t and layer l into the noised run changes the target probability by

    p(a_noised + Δ) − p(a_noised) ≈ Δ · ∂p/∂a |_(noised run),    Δ = a_clean − a_noised,

so one clean and one noised forward plus one backward pass per noise draw (here: all draws in
one batch) give the estimate for every (token, layer) at once, where exact tracing replays the
model once per cell. A window restoration (layers [l − w//2, l + ceil(w/2))) is estimated by the
sum of its layers' terms (the first-order effect of patching several states), and the estimates
are averaged over the same noise draws as tracing, so ``p_noised + mean estimate`` stands where
tracing has the restored probability and every effect definition applies unchanged.

Tokens before the subject are not estimated: their states do not depend on the subject, so
Δ = 0 and the estimate is exactly zero (as tracing's restoration there is exactly a no-op).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from locedit.adapters import module_for, n_layers, untuple
from locedit.hooks import forward_hooks
from locedit.layer_windows import window_bounds
from locedit.noise import subject_noise_hook


def attribution_terms(
    model: nn.Module,
    input_ids: torch.Tensor,
    subject_range: tuple[int, int],
    noise: torch.Tensor,
    target_ids: list[int],
    component: str = "mlp",
) -> torch.Tensor:
    """First-order restoration terms ``[samples, pos, n_layers]`` (float64):
    ``(a_clean − a_noised)[t] · ∂p_s/∂a[t]`` per noise draw s, position t and layer.

    Args:
        input_ids: ``[1, pos]`` prompt + target tokens but the last (teacher forcing).
        noise: ``[samples, n_subject, d_model]`` subject-embedding noise, one draw per row.
        target_ids: the target's tokens, read at the last ``len(target_ids)`` positions; p is
            the product of their probabilities (tracing's score).
        component: the adapter component whose output is attributed (``mlp``, ``attn``,
            ``block``).
    """
    samples = noise.shape[0]
    layers = range(n_layers(model))
    captured: list[torch.Tensor | None] = [None] * len(layers)

    def leaf(module, inputs, output):  # a graph to differentiate without the weights' gradients
        return output.detach().requires_grad_(True)

    def capture(layer):
        def hook(module, inputs, output):
            captured[layer] = untuple(output)

        return hook

    zero = torch.zeros_like(noise[:1])
    hooks = [(module_for(model, "embed"), leaf),
             (module_for(model, "embed"), subject_noise_hook(subject_range, torch.cat([zero, noise])))]
    hooks += [(module_for(model, component, layer), capture(layer)) for layer in layers]
    n_target = len(target_ids)
    with torch.enable_grad(), forward_hooks(hooks):
        logits = model(input_ids=input_ids.expand(1 + samples, -1), use_cache=False,
                       logits_to_keep=n_target).logits  # [1 + samples, n_target, vocab]
        logp = torch.log_softmax(logits.double(), dim=-1)
        tgt = torch.tensor(target_ids, device=logp.device).view(1, -1, 1).expand(1 + samples, -1, 1)
        p = logp.gather(-1, tgt).sum((1, 2)).exp()  # [1 + samples]
        grads = torch.autograd.grad(p[1:].sum(), captured)  # row 0 (clean) is not differentiated
    terms = []
    for a, g in zip(captured, grads):  # a, g: [1 + samples, pos, d]
        delta = (a[:1] - a[1:]).detach().double()
        terms.append((delta * g[1:].double()).sum(-1))  # [samples, pos]
    return torch.stack(terms, dim=-1)


def attribution_grid(
    terms: torch.Tensor, window: int, n_prompt: int, subject_start: int, p_noised: float
) -> np.ndarray:
    """The estimated restored probabilities ``[n_prompt, n_layers]`` of a ``window``: p_noised +
    the noise-draw mean of the summed terms ``[samples, pos, n_layers]`` of the window's layers,
    from the subject's first token on (p_noised before it)."""
    mean = terms.mean(0)[:n_prompt].cpu().numpy()  # [n_prompt, n_layers]
    L = mean.shape[1]
    cumulative = np.concatenate([np.zeros((n_prompt, 1)), np.cumsum(mean, axis=1)], axis=1)
    grid = np.full((n_prompt, L), float(p_noised))
    for c in range(L):
        a, b = window_bounds(c, window, L)
        grid[subject_start:, c] += cumulative[subject_start:, b] - cumulative[subject_start:, a]
    return grid
