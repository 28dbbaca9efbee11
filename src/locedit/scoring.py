"""Tokenising prompts/targets and scoring full multi-token targets, batched.

Conventions (shared by the filter, tracing and editing):

* A target is scored with a leading space, as CounterFact/ROME do: the text is
  ``prompt + " " + target``. Target token ids are taken as the suffix of the joint encoding
  beyond the prompt's ids (robust for SentencePiece tokenizers, where encoding ``" Paris"`` alone
  would add a second word-boundary marker); when tokenisation merges across the boundary we fall
  back to encoding the target alone.
* The probability of a multi-token target is the product of its teacher-forced token
  probabilities: ``exp(sum log p)``.
* Batches are right-padded; positions of padded rows are unaffected because each row's tokens
  start at position 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's own special tokens (e.g. Llama's BOS)."""
    return tokenizer(prompt)["input_ids"]


def encode_prompt_target(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, target_ids)`` for scoring ``" " + target`` after ``prompt``."""
    target = target.strip()
    if not target:
        raise ValueError(f"empty target for prompt {prompt!r}")
    prompt_ids = encode_prompt(tokenizer, prompt)
    joint = tokenizer(prompt + " " + target)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return prompt_ids, joint[len(prompt_ids) :]
    return prompt_ids, tokenizer(" " + target, add_special_tokens=False)["input_ids"]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target: str
) -> tuple[list[int], list[int], list[int]]:
    """``(row, read positions, target ids)`` of a teacher-forced (prompt, target) pair: the row
    is ``prompt_ids + target_ids[:-1]`` and the logits at ``len(prompt_ids) - 1 + j`` predict
    target token ``j``."""
    p, t = encode_prompt_target(tokenizer, prompt, target)
    return p + t[:-1], list(range(len(p) - 1, len(p) - 1 + len(t))), t


@dataclass
class TeacherForcedBatch:
    """Right-padded rows ``prompt_ids + target_ids[:-1]`` and where each target is read.

    Attributes:
        input_ids: ``[batch, pos]``.
        attention_mask: ``[batch, pos]``.
        target_ids: per row, the target token ids.
        read_positions: per row, the positions whose logits predict the target tokens
            (``len(prompt_ids) - 1 + j`` for target token ``j``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_ids: list[list[int]]
    read_positions: list[list[int]]


def make_batch(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    device: torch.device | str = "cpu",
) -> TeacherForcedBatch:
    """Build a teacher-forced batch for ``len(prompts)`` (prompt, target) pairs."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    rows, reads, tgts = zip(*(encode_pair(tokenizer, p, t) for p, t in zip(prompts, targets)))
    ids, mask = right_pad(rows, tokenizer.pad_token_id)
    return TeacherForcedBatch(ids.to(device), mask.to(device), list(tgts), list(reads))


def right_pad(rows: Sequence[Sequence[int]], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each ``[batch, max_len]``, rows right-padded with ``pad_id``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def gather_target_logprobs(logits: torch.Tensor, batch: TeacherForcedBatch) -> torch.Tensor:
    """Sum of target-token log-probabilities per row.

    Args:
        logits: ``[batch, pos, vocab]`` from a forward pass over ``batch.input_ids``.
    Returns:
        ``[batch]`` float32 log-probabilities of the full targets.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [batch, pos, vocab]
    out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    for i, (pos, tgt) in enumerate(zip(batch.read_positions, batch.target_ids)):
        out[i] = logp[i, pos, tgt].sum()
    return out


@torch.no_grad()
def target_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 32,
) -> torch.Tensor:
    """Teacher-forced log p(target | prompt) for each pair, in batches. Returns ``[n]`` on CPU."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = make_batch(
            tokenizer,
            prompts[start : start + batch_size],
            targets[start : start + batch_size],
            device,
        )
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        out.append(gather_target_logprobs(logits, batch).cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def greedy_continuations(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 36,
    batch_size: int = 32,
) -> list[str]:
    """Greedy continuations (continuation text only, prompt excluded), left-padded batches."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right
    try:
        texts: list[str] = []
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return texts


def contains_target(continuation: str, target: str) -> bool:
    """Paper App. A correctness: case-insensitive substring match of the stripped target."""
    return target.strip().lower() in continuation.strip().lower()
