"""Known-fact filter (paper App. A): which facts does the model know before editing?

* ``p_true`` / ``p_new``: teacher-forced probabilities of the full ``target_true`` /
  ``target_new`` after the rewrite prompt (leading-space convention, locedit.scoring).
* ``is_correct``: ``target_true`` appears (case-insensitive) in the greedy continuation of
  ``max_new_tokens`` (36) tokens — the paper's correctness criterion.
* ``erasure_eligible``: ``p_true >= erasure_min_prob`` (0.02): only these are used for fact
  erasure, "so that there is a reasonable amount of probability mass to be erased".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from locedit.data.records import flat_fact
from locedit.scoring import contains_target, greedy_continuations, target_logprobs


def filter_known_facts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict],
    *,
    max_new_tokens: int = 36,
    erasure_min_prob: float = 0.02,
    batch_size: int = 32,
) -> pd.DataFrame:
    """One row per record: the fact's fields plus ``p_true, p_new, is_correct, erasure_eligible,
    continuation``, in record order."""
    facts = pd.DataFrame([flat_fact(r) for r in records])
    if facts.empty:
        return facts.assign(
            p_true=[], p_new=[], is_correct=[], erasure_eligible=[], continuation=[]
        )
    prompts = [p.format(s) for p, s in zip(facts["prompt"], facts["subject"])]
    lp_true = target_logprobs(model, tokenizer, prompts, list(facts["target_true"]), batch_size=batch_size)
    lp_new = target_logprobs(model, tokenizer, prompts, list(facts["target_new"]), batch_size=batch_size)
    conts = greedy_continuations(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    facts["p_true"] = np.exp(lp_true.double().numpy())
    facts["p_new"] = np.exp(lp_new.double().numpy())
    facts["continuation"] = conts
    facts["is_correct"] = [contains_target(c, t) for c, t in zip(conts, facts["target_true"])]
    facts["erasure_eligible"] = facts["p_true"] >= erasure_min_prob
    return facts
