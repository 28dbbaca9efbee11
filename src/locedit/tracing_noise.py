"""Subject noise of Causal Tracing: the noise draws, the embedding hook and the noise level σ.

σ is given, or derived by ROME's rule: ``multiplier`` (3) × the standard deviation of the
subject-token embeddings over the dataset. ROME's ``collect_embedding_std`` tokenises each bare
subject; here the subject tokens are those of ``prompt.format(subject)`` — exactly the
embeddings that get noised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.adapters import module_for
from locedit.records import subject_token_range


def make_noise(samples: int, n_tokens: int, width: int, std: float, seed: int) -> torch.Tensor:
    """The noise draws of one fact: ``[samples, n_tokens, width]`` ~ N(0, std²), CPU float32."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(samples, n_tokens, width, generator=gen) * float(std)


def subject_noise_hook(span: tuple[int, int], noise: torch.Tensor) -> Callable:
    """Embedding forward hook adding ``noise[k]`` ``[n_subject, d]`` to row k's subject positions."""
    start, end = span

    def hook(module, inputs, output):  # output: [samples, pos, d_model]
        if output.shape[0] != noise.shape[0]:
            raise RuntimeError(f"noise has {noise.shape[0]} rows, batch has {output.shape[0]}")
        output = output.clone()
        output[:, start:end] += noise.to(output.device, output.dtype)
        return output

    return hook


def fact_seed(seed: int, case_id: int) -> int:
    """Per-fact noise seed: independent draws per fact, reproducible from the config seed."""
    return int(seed) * 1_000_003 + int(case_id)


@torch.no_grad()
def subject_embedding_std(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, facts: Iterable[tuple[str, str]]
) -> tuple[float, int, list[int]]:
    """Std over all entries of the embedding outputs of the subjects' tokens, in context.

    ROME's ``collect_embedding_std`` tokenises the bare subject; here the subject tokens are those
    of ``prompt.format(subject)`` — exactly the embeddings that get noised.

    Args:
        facts: ``(prompt template, subject)`` pairs.
    Returns:
        ``(std, number of subject tokens, indices of facts whose subject was not found)``.
    """
    embed = module_for(model, "embed")
    device = next(model.parameters()).device
    chunks, missing = [], []
    for i, (prompt, subject) in enumerate(facts):
        try:
            s0, s1 = subject_token_range(tokenizer, prompt, subject)
        except ValueError:
            missing.append(i)
            continue
        ids = tokenizer(prompt.format(subject))["input_ids"][s0:s1]
        chunks.append(embed(torch.tensor(ids, device=device)).double().cpu())
    if not chunks:
        raise ValueError("no subject could be located: cannot estimate the noise level")
    allemb = torch.cat(chunks)  # [n_tokens, d_model]
    return float(allemb.std()), int(allemb.shape[0]), missing


def estimate_noise_std(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[tuple[str, str]],
    multiplier: float = 3.0,
) -> float:
    """ROME's rule: σ = ``multiplier`` × std of subject-token embeddings over the dataset."""
    std, _, _ = subject_embedding_std(model, tokenizer, facts)
    return multiplier * std
