"""Symmetric token replacement (STR): the corrupted run that keeps the input in distribution.

Zhang & Nanda (ICLR 2024, "Towards Best Practices of Activation Patching") corrupt a fact by
replacing its subject with another subject of the same token length, instead of adding Gaussian
noise to the subject's embeddings. Here a fact's **partner** is chosen from the dataset:

* another subject whose tokens in *this* prompt are as many as the fact's and leave every other
  token of the prompt unchanged (so positions line up and only the subject differs);
* whose true object differs from the fact's (else the corrupted run still answers the fact);
* of the same relation where one exists, else of any relation;
* drawn uniformly among those with a seed of its own per fact
  (:func:`locedit.seeds.derived_seed` with salt ``str``), so a partner never depends on the
  shard or on which other facts are traced.

A fact without such a partner is not traced under STR (status ``no_partner``), and the tracing
job names it in its log.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from locedit.data.records import subject_token_range
from locedit.seeds import derived_seed


def str_partner(
    tokenizer: PreTrainedTokenizerBase, fact: dict, pool: Sequence[dict], seed: int
) -> tuple[dict, list[int]] | None:
    """The partner of ``fact`` and its subject's token ids in the fact's prompt, or ``None``.

    Args:
        fact, pool: flat facts (``case_id, prompt, subject, relation_id, target_true``);
            ``pool`` is the dataset's records, ``fact`` among them or not.
        seed: the config seed.
    Returns:
        ``(partner, ids [n_subject])``, ``ids`` replacing the tokens of the fact's subject span.
    """
    prompt, subject = fact["prompt"], fact["subject"]
    ids, s0, s1 = _subject_ids(tokenizer, prompt, subject)
    truth = str(fact["target_true"]).strip().lower()
    seen, same, other = {subject}, [], []
    for cand in sorted(pool, key=lambda r: (str(r["subject"]), int(r["case_id"]))):
        if cand["subject"] in seen or str(cand["target_true"]).strip().lower() == truth:
            continue
        seen.add(cand["subject"])
        (same if cand["relation_id"] == fact["relation_id"] else other).append(cand)
    rng = random.Random(derived_seed(seed, int(fact["case_id"]), "str"))
    for tier in (same, other):
        fits = [(c, alt[s0:s1]) for c in tier if (alt := _aligned(tokenizer, prompt, c["subject"], ids, s0, s1))]
        if fits:
            return fits[rng.randrange(len(fits))]
    return None


class PartnerError(ValueError):
    """A partner subject chosen by hand cannot replace the fact's subject token for token."""


def partner_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str, partner: str) -> list[int]:
    """The token ids of ``partner`` that replace ``subject``'s in ``prompt`` (one fact traced
    with a partner chosen by hand).

    Raises:
        PartnerError: the partner's tokens in the prompt are not as many as the subject's, or
            the rest of the prompt tokenises differently around them.
    """
    ids, s0, s1 = _subject_ids(tokenizer, prompt, subject)
    alt = _aligned(tokenizer, prompt, partner, ids, s0, s1)
    if alt is None:
        raise PartnerError(f"partner {partner!r} does not replace {subject!r} token for token in {prompt!r} "
                         f"({s1 - s0} subject tokens; symmetric token replacement needs as many)")
    return alt[s0:s1]


def _subject_ids(tokenizer, prompt: str, subject: str) -> tuple[list[int], int, int]:
    """``(ids of prompt.format(subject), subject span start, end)``."""
    s0, s1 = subject_token_range(tokenizer, prompt, subject)
    return tokenizer(prompt.format(subject))["input_ids"], s0, s1


def _aligned(tokenizer, prompt: str, subject: str, ids: list[int], s0: int, s1: int) -> list[int] | None:
    """The ids of ``prompt.format(subject)`` when they differ from ``ids`` only inside
    ``[s0, s1)``, else ``None``."""
    alt = tokenizer(prompt.format(subject))["input_ids"]
    if len(alt) != len(ids) or alt[:s0] != ids[:s0] or alt[s1:] != ids[s1:] or alt[s0:s1] == ids[s0:s1]:
        return None
    return alt


def subject_replace_hook(span: tuple[int, int], rows: torch.Tensor) -> Callable:
    """Embedding forward hook: rows ``1..`` of the batch get ``rows`` ``[n_subject, d_model]`` at
    the subject's positions ``span``; row 0 (the clean run) is left as it is."""
    start, end = span

    def hook(module, inputs, output):  # output: [batch, pos, d_model]
        output = output.clone()
        output[1:, start:end] = rows.to(output.device, output.dtype)
        return output

    return hook
