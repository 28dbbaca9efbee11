"""One fact, without the workflow: trace a prompt and draw its heatmap, edit a fact with any
method and get the metrics row the workflow writes.

    import locedit

    lm = locedit.load("gpt2")                 # a hub id, a save_pretrained directory, or "toy"
    tr = locedit.trace(lm, "The mother tongue of {} is", "Danielle Darrieux", "French")
    locedit.plot_trace(tr, "trace.png")       # Fig. 2-style heatmap
    row = locedit.edit(lm, "rome", 5, "The mother tongue of {} is", "Danielle Darrieux",
                       target_new="English", target_true="French")

Every step is the workflow's own code (the same functions its rules call), on one record.
ROME's and MEMIT's prerequisites are computed on first use and cached under
``$LOCEDIT_CACHE`` (default ``~/.cache/locedit``): context templates sampled from the model, and
second-moment statistics over ``stats_corpus`` (a text file, one document per line; for the toy
model the fact world's corpus next to it is found by itself).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from transformers import PreTrainedTokenizerBase

from locedit.registry.kinds import TRACE_KINDS
from locedit.registry.methods import Method, config_hparams, get_method  # noqa: F401 (config_hparams: the API's)
from locedit.registry.variants import ERROR_INJECTION, VARIANTS
from locedit.editing.driver import run_edit_job
from locedit.editing.engine import DEFAULT_MAX_FACTS, DEFAULT_ROW_BUDGET
from locedit.editing.inputs import prepare_inputs, sample_essence
from locedit.editing.variants import check_variant
from locedit.data.filtering import filter_known_facts
from locedit.files import file_sha256
from locedit.gguf import ensure_imported, is_gguf_source
from locedit.io import read_json, write_json
from locedit.modeling import load_model
from locedit.provenance import toy_dir_of_file
from locedit.data.records import validate_records
from locedit.scoring import encode_prompt_target
from locedit.tracing.trace import FactTracer, TraceResult, estimate_noise_std, trace_fact

#: Essence texts and their perplexity cap (the paper's App. B values; the workflow's defaults).
ESSENCE = {"n_texts": 5, "top_k": 5, "max_new_tokens": 30, "max_tokens": 100, "cap": 5.0}
#: Context-template lengths of the authors' ROME and MEMIT code.
TEMPLATES = {"top_k": 5, "rome_lengths": [[5, 10], [10, 10]],
             "memit_prompts": ["The", "Therefore", "Because", "I", "You"],
             "memit_lengths": [[10, 5]]}  # fmt: skip


@dataclass
class LoadedModel:
    """A model, its tokenizer and where it came from (the cache key of its statistics)."""

    model: torch.nn.Module
    tok: PreTrainedTokenizerBase
    source: str
    cache: dict = field(default_factory=dict, repr=False)


def toy_dir(config: str | os.PathLike = "config.yaml") -> Path:
    """The directory of the toy model the workflow trains for ``config`` (its world, toy and seed
    settings; ``resources/models/toy-{key}`` next to the config, see :mod:`locedit.provenance`)."""
    return toy_dir_of_file(config)


def load(source: str = "toy", *, device: str = "auto", dtype: str = "float32",
         revision: str | None = None) -> LoadedModel:
    """Load a hub id, a ``save_pretrained`` directory, a ``.gguf`` file or a packaged GGUF
    model's name (``"smollm2-135m"``; imported once under ``$LOCEDIT_CACHE``), or ``"toy"``
    (the toy of ``config.yaml`` in the working directory, :func:`toy_dir`; built by
    ``snakemake --cores 2 train_toy_model``). ``revision``: a hub model's branch, tag or commit."""
    path = str(toy_dir()) if source == "toy" else source
    if is_gguf_source(source):
        path = str(ensure_imported(source, cache_root()))
    if source == "toy" and not Path(path, "config.json").is_file():
        raise FileNotFoundError(
            f"no toy model in {Path(path).resolve()}: build it with "
            "`snakemake --cores 2 train_toy_model` in the repository"
        )
    model, tok = load_model(path, dtype=dtype, device=device, revision=revision)
    return LoadedModel(model, tok, str(Path(path).resolve()) if Path(path).is_dir() else path)


def _request(prompt: str, subject: str, target_true: str, target_new: str, case_id: int = 0) -> dict:
    """A CounterFact-shaped record of one request (checked by the workflow's validation)."""
    record = {
        "case_id": int(case_id),
        "requested_rewrite": {"prompt": prompt, "subject": subject, "relation_id": "api",
                              "target_true": {"str": target_true}, "target_new": {"str": target_new}},
        "paraphrase_prompts": [], "neighborhood_prompts": [], "attribute_prompts": [],
    }  # fmt: skip
    return record


def knows(lm: LoadedModel, prompt: str, subject: str, target: str) -> dict:
    """Does the model know the fact? ``known``: the workflow's criterion (paper App. A: the
    target appears in the greedy continuation of 36 tokens), with that ``continuation``,
    ``p_target`` (teacher-forced probability of the whole target) and ``rank`` (of the target's
    first token among the next-token predictions; 1 = the model's top choice)."""
    if prompt.count("{}") != 1:
        raise ValueError(f"prompt {prompt!r}: needs exactly one '{{}}' slot for the subject")
    # p_new is not asked for here: the request's target_new is a copy of the target.
    fact = filter_known_facts(lm.model, lm.tok, [_request(prompt, subject, target, target)]).iloc[0]
    prompt_ids, target_ids = encode_prompt_target(lm.tok, prompt.format(subject), target)
    device = next(lm.model.parameters()).device
    with torch.no_grad():
        logits = lm.model(torch.tensor([prompt_ids], device=device)).logits[0, -1]
    rank = int((logits > logits[target_ids[0]]).sum()) + 1
    return {"known": bool(fact["is_correct"]), "p_target": float(fact["p_true"]), "rank": rank,
            "continuation": str(fact["continuation"])}


def _warn_unknown(known: dict, target: str) -> None:
    if not known["known"]:
        warnings.warn(
            f"the model does not know this fact: {target!r} is not in its greedy continuation "
            f"{known['continuation'][:80]!r} (p {known['p_target']:.3g}"
            + (f", rank {known['rank']}" if "rank" in known else "")
            + "); the study traces and edits known facts only", UnknownFactWarning, stacklevel=3)


class UnknownFactWarning(UserWarning):
    """Traced or edited a fact the model does not know (the study keeps known facts only)."""


def trace(
    lm: LoadedModel, prompt: str, subject: str, target: str, *, kind: str = "mlp",
    window: int = 10, samples: int = 10, noise_std: float | None = None, seed: int = 0,
    partner: str | None = None, contrast: str | None = None,
) -> TraceResult:
    """Causal Tracing of one fact (``prompt`` has ``{}`` for the subject). ``noise_std=None``:
    3 × the std of this subject's token embeddings (ROME's rule on one fact). ``kind`` is any
    registered tracing kind (:mod:`locedit.registry.kinds`); one that replaces the subject
    (``mlp_str``, ...) needs a ``partner`` subject with as many tokens in the prompt, and a
    ``logit_diff`` kind under noise compares with ``contrast`` (e.g. the new object). The
    result's ``known`` says whether the model knows the fact (:func:`knows`); a warning when it
    does not."""
    known = knows(lm, prompt, subject, target)
    _warn_unknown(known, target)
    result = trace_fact(lm.model, lm.tok, prompt, subject, target, kind=kind, window=window,
                        noise_std=noise_std, samples=samples, seed=seed, partner=partner,
                        contrast=contrast)  # fmt: skip
    result.known = known
    return result


def plot_trace(result: TraceResult, path: str | os.PathLike | None = None) -> plt.Figure:
    """Fig. 2-style heatmap of ``result``: prompt tokens (subject starred) × layers (1-indexed).
    Saved to ``path`` (PNG/PDF by suffix) when given."""
    import seaborn as sns

    rows, n_layers = result.restored.shape
    fig, ax = plt.subplots(figsize=(0.35 * n_layers + 2.5, 0.3 * rows + 1.5))
    s0, s1 = result.subject_range
    labels = [repr(t)[1:-1] + ("*" if s0 <= i < s1 else "") for i, t in enumerate(result.tokens)]
    sns.heatmap(result.restored, ax=ax, cmap=TRACE_KINDS[result.kind].cmap if result.kind in TRACE_KINDS else "Purples",
                xticklabels=[str(c + 1) for c in range(n_layers)], yticklabels=labels,
                cbar_kws={"label": "p(target)", "format": "%.2g"})
    ax.set_xlabel(f"Center of {result.window} restored layers" if result.window > 1 else "Layer")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(f"{result.kind} tracing (window {result.window})\n"
                 f"Orig p: {result.p_clean:.3g}, noised p: {result.p_noised:.3g}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def peak(result: TraceResult) -> tuple[int, int, float]:
    """``(token index, layer, restored p)`` of the grid's maximum (0-indexed)."""
    t, layer = divmod(int(result.restored.argmax()), result.restored.shape[1])
    return t, layer, float(result.restored[t, layer])


def edit(
    lm: LoadedModel, method: str, layer: int, prompt: str, subject: str, *, target_new: str,
    target_true: str, paraphrases: Sequence[str] = (), neighborhood: Sequence[str] = (),
    variant: str = ERROR_INJECTION.name, hparams: dict | None = None,
    stats_corpus: str | os.PathLike | None = None, noise_std: float | None = None, seed: int = 0,
    case_id: int = 0, aliases: Sequence[str] = (), descriptions: Sequence[str] = (),
    reverse: Sequence[str] = (), other_subjects: Sequence[str] = (), generic: Sequence[str] = (),
) -> dict:
    """Edit one fact with ``method`` (a name of :data:`locedit.registry.methods.METHODS`) at
    ``layer`` (0-indexed) under the editing problem ``variant``, evaluate it, restore the
    weights; the workflow's metrics row.

    ``hparams`` override the method's defaults (the authors' values; :func:`config_hparams`
    reads a workflow config's). ``noise_std``: fact forcing's σ (default: ROME's rule on this
    subject). ``seed`` and ``case_id`` seed the essence texts and noise as the workflow does, so
    a record's row here matches its row in ``edits.parquet``. Edits run in the batched engine
    with the workflow's default settings.

    Generalisation probes (:mod:`locedit.editing.probes`), scored when any is given:
    ``aliases`` / ``descriptions``, the fact's prompt through other names of the subject;
    ``reverse``, templates whose ``{}`` takes an object and whose answer is the subject;
    ``other_subjects``, prompts about other subjects of the relation whose answer is neither
    object; ``generic``, templates naming the subject (``{}``) that ask for neither.
    """
    spec = get_method(method)
    check_variant(variant)
    record = _request(prompt, subject, target_true, target_new, case_id)
    record.update(paraphrase_prompts=list(paraphrases), neighborhood_prompts=list(neighborhood))
    routes = {"alias_prompts": aliases, "description_prompts": descriptions, "reverse_prompts": reverse}
    record.update({k: list(v) for k, v in routes.items() if v})
    probes, others = None, {}
    if any(routes.values()) or other_subjects or generic:
        probes = {"enabled": True, "other_subjects": len(other_subjects), "generic_prompts": list(generic)}
        # Over-reach prompts of the request's relation; no subject or object to exclude.
        others = {record["requested_rewrite"]["relation_id"]: [("", p, "") for p in other_subjects]}
    validate_records([record], lm.tok, source="the edit request")
    model, tok = lm.model, lm.tok
    facts = {int(case_id): filter_known_facts(model, tok, [record]).iloc[0].to_dict()}
    if not facts[int(case_id)]["is_correct"]:
        _warn_unknown({"known": False, "continuation": facts[int(case_id)]["continuation"],
                       "p_target": facts[int(case_id)]["p_true"]}, target_true)
    essence = sample_essence(model, tok, [record], facts, essence=ESSENCE, seed=seed, only_correct=False)
    o_noise, sigma = {}, None
    needs = VARIANTS[variant].tracing_input  # o_noise needs σ too: it traces
    if needs is not None:
        sigma = noise_std if noise_std is not None else estimate_noise_std(model, tok, [(prompt, subject)])
    if needs == "o_noise":
        tracer = FactTracer(model, tok, prompt, subject, target_true, noise_std=sigma, samples=10, seed=seed)
        o_noise = {int(case_id): tracer.o_noise()}
    out = prepare_inputs(model, tok, [record], facts, variants=[variant], o_noise=o_noise,
                         noise_std=sigma, essence=ESSENCE, seed=seed, only_correct=False,
                         erasure_only_eligible=False, essence_texts=essence, probes=probes,
                         others=others)
    if not out["cases"]:
        raise ValueError(f"{variant} cannot edit this fact: {out['skipped'][0]['reason']}")
    stats, templates = _prerequisites(lm, spec, stats_corpus, seed) if spec.needs_stats else (None, [])
    engine = {"row_budget": DEFAULT_ROW_BUDGET, "max_facts": DEFAULT_MAX_FACTS}
    rows = run_edit_job(model, tok, out["cases"], method, layer, dict(hparams or {}), stats=stats,
                        context_templates=templates, engine=engine, essence_cap=ESSENCE["cap"],
                        essence_max_tokens=ESSENCE["max_tokens"])
    return {**rows.iloc[0].to_dict(), "known": bool(facts[int(case_id)]["is_correct"])}


def cache_dir(lm: LoadedModel) -> Path:
    """This model's cache directory under ``$LOCEDIT_CACHE`` (default ``~/.cache/locedit``)."""
    key = hashlib.sha256(lm.source.encode()).hexdigest()[:12]
    return cache_root() / f"{Path(lm.source).name}-{key}"


def cache_root() -> Path:
    """``$LOCEDIT_CACHE``, default ``~/.cache/locedit``."""
    return Path(os.environ.get("LOCEDIT_CACHE", Path.home() / ".cache" / "locedit"))


def _prerequisites(lm: LoadedModel, spec: Method, corpus, seed: int):
    """A method's statistics and context templates, computed on first use, then cached."""
    from locedit.editing.compute_kv import generate_context_templates
    from locedit.editing.covariance import CovarianceStore, compute_layer_stats, write_manifest

    root = cache_dir(lm)
    tpl_path = root / f"context_templates_seed{seed}.json"
    if not tpl_path.exists():
        write_json(generate_context_templates(lm.model, lm.tok, seed=seed, **TEMPLATES), tpl_path)
    templates = read_json(tpl_path)[spec.templates]
    corpus = corpus or _toy_corpus(lm)
    if corpus is None:
        raise ValueError(
            f"{spec.name} needs second-moment statistics of the MLP inputs: pass stats_corpus=<text "
            "file, one document per line> (ROME used 100,000 Wikipedia articles)"
        )
    digest = file_sha256(corpus)[:12]
    stats_dir = root / f"stats-{digest}"
    if not (stats_dir / "manifest.json").exists():
        write_manifest(compute_layer_stats(lm.model, lm.tok, corpus, stats_dir), stats_dir)
    return CovarianceStore.from_dir(stats_dir, model=lm.model), templates


def toy_world(lm: LoadedModel) -> Path | None:
    """The fact world (``records.json``, ``corpus.txt``) a toy built by the workflow was trained
    on: its ``made_from.json`` names it, relative to the working directory the toy lies in."""
    made_from = Path(lm.source, "made_from.json")
    if not made_from.is_file():
        return None
    world = Path(lm.source).parents[2] / read_json(made_from)["world_dir"]
    return world if world.is_dir() else None


def _toy_corpus(lm: LoadedModel) -> Path | None:
    world = toy_world(lm)
    return world / "corpus.txt" if world is not None and (world / "corpus.txt").is_file() else None
