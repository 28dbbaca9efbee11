"""Batched evaluation of one edit: every probe prompt × target in one teacher-forced batch.

For a case (see :mod:`locedit.editing.variants`) the probes are

* ``rewrite``: the edit prompt ``prompt.format(subject)``, targets y and b (the contrast);
* ``paraphrase``: every paraphrase prompt, targets y and b;
* ``neighborhood``: every neighborhood prompt, targets y, b and the neighborhood-score target;
* the generalisation probes' families when the case has them (:mod:`locedit.editing.probes`).

All (prompt, target) pairs go through the model together (chunks of ``batch_size`` rows), so a
CounterFact case (1 + 2 + 10 prompts) costs one forward pass, plus one for the essence texts.
A pair's row is ``prompt + target[:-1]``; pairs whose row is a prefix of another pair's row
(every single-token target of one prompt, e.g. y, b and the neighborhood target) are read from
that row, since causal attention makes the logits at a position independent of what follows
(halves the rows of a CounterFact case with one-token objects; results equal to float rounding).
Both the probe and the essence passes run under :func:`locedit.kernels.fused_activations`.
For fact forcing the subject is noised at its own token positions in every prompt that contains
it (rewrite, paraphrase, essence texts); neighborhood prompts do not contain it and stay clean.
The same function computes the pre-edit values (once per case, ``prepare_edit_inputs``) and
the post-edit values (after every edit), so both go through identical code.
"""

from __future__ import annotations

import functools

import torch
from transformers import PreTrainedTokenizerBase

from locedit.editing.essence import perplexities, text_subject_span
from locedit.editing.probes import probe_rows
from locedit.kernels import fused_activations
from locedit.noise import noised_subject
from locedit.data.records import subject_token_range
from locedit.scoring import encode_pair, right_pad

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
        batch_size: rows per forward pass.
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
    encoded = [_encoded(tokenizer, p, t) for p, t, _ in pairs]
    spans = [_noise_span(tokenizer, case, p, fam) if noise is not None else None for p, _, fam in pairs]
    host = _host_rows([ids for ids, _, _ in encoded], spans)
    hosts = sorted(set(host))
    slot = {h: i for i, h in enumerate(hosts)}
    logps = torch.empty(len(pairs))
    hits = torch.empty(len(pairs), dtype=torch.bool) if greedy else None
    with fused_activations(model):
        for start in range(0, len(hosts), batch_size):
            chunk = hosts[start : start + batch_size]
            ids, mask = right_pad([encoded[h][0] for h in chunk], tokenizer.pad_token_id)
            fwd = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
            if noise is not None:
                with noised_subject(model, [spans[h] for h in chunk], noise):
                    logits = model(**fwd).logits
            else:
                logits = model(**fwd).logits  # [rows, pos, vocab]
            logp = torch.log_softmax(logits.float(), dim=-1)
            for k in (k for k, h in enumerate(host) if start <= slot[h] < start + len(chunk)):
                _, reads, tgt = encoded[k]
                r = slot[host[k]] - start
                logps[k] = logp[r, reads, tgt].sum().cpu()
                if greedy:
                    hits[k] = bool((logits[r, reads].argmax(-1).cpu() == torch.tensor(tgt)).all())
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


@functools.lru_cache(maxsize=1 << 16)
def _encoded(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str):
    """:func:`locedit.scoring.encode_pair`, the row as a tuple; an edit job scores the same pairs
    after every edit of a case (one per layer), so they are encoded once."""
    row, reads, tgt = encode_pair(tokenizer, prompt, target)
    return tuple(row), reads, tgt


def _host_rows(rows: list[tuple[int, ...]], spans: list) -> list[int]:
    """For each row, the index of the longest row with the same noise span that starts with it
    (itself when none does; the first of identical rows): its logits at every position of the
    row are the row's own."""
    # (length, -index): of several identical rows the first is the host of all of them
    return [
        max((j for j, s in enumerate(rows) if spans[j] == spans[i] and s[: len(r)] == r),
            key=lambda j: (len(rows[j]), -j))
        for i, r in enumerate(rows)
    ]


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
) -> tuple[dict[str, dict[str, list[float]]], float, dict[str, dict[str, list[bool]]]]:
    """``(probe probabilities, mean essence perplexity, greedy hits)`` of the model as it is
    now; the hits (does greedy decoding produce each row's target?) come from the same pass."""
    probs, hits = probe_probabilities(model, tokenizer, case, noise=noise, batch_size=batch_size, greedy=True)
    ppl = perplexities(
        model, tokenizer, essence_texts, max_tokens=max_tokens, subject=case["subject"], noise=noise
    )
    return probs, float(sum(ppl) / len(ppl)) if ppl else float("nan"), hits
