"""Batched evaluation of one edit: every probe prompt × target in one teacher-forced batch.

For a case (see :mod:`locedit.editing.variants`) the probes are

* ``rewrite``: the edit prompt ``prompt.format(subject)``, targets y and b (the contrast);
* ``paraphrase``: every paraphrase prompt, targets y and b;
* ``neighborhood``: every neighborhood prompt, targets y, b and the neighborhood-score target;
* the generalisation probes' families when the case has them (:mod:`locedit.editing.probes`).

All (prompt, target) rows go through the model together (chunks of ``batch_size`` rows), so a
CounterFact case (1 + 2 + 10 prompts) costs one forward pass, plus one for the essence texts.
For fact forcing the subject is noised at its own token positions in every prompt that contains
it (rewrite, paraphrase, essence texts); neighborhood prompts do not contain it and stay clean.
The same function computes the pre-edit values (once per case, ``prepare_edit_inputs``) and
the post-edit values (after every edit), so both go through identical code.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from locedit.editing.essence import perplexities, text_subject_span
from locedit.editing.probes import probe_rows
from locedit.noise import noised_subject
from locedit.data.records import subject_token_range
from locedit.scoring import gather_target_logprobs, make_batch

FAMILIES = ("rewrite", "paraphrase", "neighborhood")


def probe_plan(case: dict) -> list[tuple[str, str, int, str, str]]:
    """Rows ``(family, role, prompt index, prompt text, target string)`` of a case's probes.

    Roles: ``target`` (y), ``contrast`` (b) and, for neighborhood prompts, ``nbr`` (the
    neighborhood-score target, usually y itself).
    """
    prompts = {
        "rewrite": [case["prompt"].format(case["subject"])],
        "paraphrase": list(case["paraphrase_prompts"]),
        "neighborhood": list(case["neighborhood_prompts"]),
    }
    roles = {"target": case["target"], "contrast": case["contrast"]}
    rows = []
    for fam in FAMILIES:
        fam_roles = dict(roles)
        if fam == "neighborhood":
            fam_roles["nbr"] = case["neighborhood_target"]
        for role, target in fam_roles.items():
            for i, prompt in enumerate(prompts[fam]):
                rows.append((fam, role, i, prompt, target))
    return rows + probe_rows(case)


@torch.no_grad()
def probe_probabilities(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    case: dict,
    *,
    noise: torch.Tensor | None = None,
    batch_size: int = 64,
    greedy: bool = False,
):
    """``{family: {role: [p per prompt]}}`` full-sequence target probabilities under the model.

    Args:
        noise: fact forcing's ``[n_tokens, d_model]`` subject noise (``None``: clean inputs).
        greedy: also return ``{family: {role: [hit per prompt]}}``, whether greedy decoding
            produces the whole target (every target token the argmax given the ones before),
            from the same forward pass.
    """
    device = next(model.parameters()).device
    rows = probe_plan(case)
    # A row whose (prompt, target) pair repeats another (e.g. nbr == target) is scored once.
    unique: dict[tuple[str, str, str], int] = {}
    keys = []
    for fam, _, _, prompt, target in rows:
        keys.append(unique.setdefault((prompt, target, fam), len(unique)))
    pairs = list(unique)
    logps = torch.empty(len(pairs))
    hits = torch.empty(len(pairs), dtype=torch.bool) if greedy else None
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = make_batch(tokenizer, [p for p, _, _ in chunk], [t for _, t, _ in chunk], device)
        fwd = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        if noise is not None:
            spans = [_noise_span(tokenizer, case, p, fam) for p, _, fam in chunk]
            with noised_subject(model, spans, noise):
                logits = model(**fwd).logits
        else:
            logits = model(**fwd).logits  # [rows, pos, vocab]
        logps[start : start + len(chunk)] = gather_target_logprobs(logits, batch).cpu()
        if greedy:
            for i, (pos, tgt) in enumerate(zip(batch.read_positions, batch.target_ids)):
                hits[start + i] = bool((logits[i, pos].argmax(-1).cpu() == torch.tensor(tgt)).all())
    probs = torch.exp(logps.double()).tolist()
    out: dict[str, dict[str, list[float]]] = {}
    for (fam, role, _, _, _), k in zip(rows, keys):
        out.setdefault(fam, {}).setdefault(role, []).append(probs[k])
    for fam in FAMILIES:  # families without prompts still appear
        out.setdefault(fam, {})
    if not greedy:
        return out
    hit: dict[str, dict[str, list[bool]]] = {}
    for (fam, role, _, _, _), k in zip(rows, keys):
        hit.setdefault(fam, {}).setdefault(role, []).append(bool(hits[k]))
    return out, hit


def _noise_span(
    tokenizer: PreTrainedTokenizerBase, case: dict, prompt: str, family: str
) -> tuple[int, int] | None:
    """Where fact forcing noises a probe: the subject's own tokens; neighborhood rows stay clean."""
    if family == "neighborhood":
        return None
    if family == "rewrite":  # the {} slot, not an accidental earlier occurrence
        return subject_token_range(tokenizer, case["prompt"], case["subject"])
    return text_subject_span(tokenizer, prompt, case["subject"])


def evaluate_case(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    case: dict,
    essence_texts: list[str],
    *,
    noise: torch.Tensor | None = None,
    max_tokens: int = 100,
    batch_size: int = 64,
) -> tuple[dict[str, dict[str, list[float]]], float]:
    """``(probe probabilities, mean essence perplexity)`` of the model as it is now."""
    probs = probe_probabilities(model, tokenizer, case, noise=noise, batch_size=batch_size)
    ppl = perplexities(
        model, tokenizer, essence_texts, max_tokens=max_tokens, subject=case["subject"], noise=noise
    )
    return probs, float(sum(ppl) / len(ppl)) if ppl else float("nan")
