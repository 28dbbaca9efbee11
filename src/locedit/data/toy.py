"""The toy model: a tiny GPT-2 and a byte-level BPE tokenizer trained on the fact-world corpus.

The default study runs on this model instead of GPT-J. It is an ordinary ``transformers``
checkpoint: :func:`train_toy_model` saves it with ``save_pretrained`` and every later stage loads
it through :func:`locedit.modeling.load_model` (``AutoModelForCausalLM`` / ``AutoTokenizer``), the
same path as a hub model, so nothing downstream special-cases it.

Design:

* **Tokenizer**: byte-level BPE (GPT-2's pre-tokenizer and decoder) trained with ``tokenizers``
  on the corpus; ``<|endoftext|>`` is BOS, EOS and padding. A small vocabulary (default 1024)
  splits the invented names into several tokens, so subjects span 2-6 tokens as real names do.
  Offsets are trimmed like GPT-2's, so :func:`locedit.records.subject_token_range` works.
* **Model**: ``GPT2LMHeadModel`` from a ``GPT2Config`` (``toy_model`` config section), dropout 0,
  tied embeddings, ``eos_token_id`` set so greedy generation stops at the end of a document.
* **Data**: every corpus line is a document; each epoch the documents are shuffled with a seeded
  ``torch.Generator``, joined with ``<|endoftext|>`` and cut into ``n_positions``-token blocks
  (GPT-2-style packing, so facts are seen at every position and after unrelated text).
* **Optimisation**: AdamW, linear warm-up then cosine decay to 10% of ``lr``, gradient clipping
  at 1. Initialisation uses ``torch.manual_seed(seed)``; batches come from a generator seeded with
  ``seed``. On CPU with a fixed thread count two trainings with the same seed give bit-identical
  weights (tested). Different thread counts may change float summation order.
* **Output**: written into a temporary directory next to ``out_dir`` and renamed into place at the
  end, so a killed job never leaves a half-written model that looks finished. ``metrics.json`` in
  the same directory records training time, final loss and, when records are given, how well the
  model knows the world (:func:`world_knowledge`).

Measured (default config: 180 records, 10.7k corpus tokens, 1.37M parameters, 600 steps of 8
blocks = 57 epochs; one thread on a shared 2-core machine): 98 s CPU time, bit-identical across
runs; 89% of the 180 facts known, paraphrase accuracy 77% (chance 12.5%), neighbourhood 86%,
median p(target_true) 0.74 and p(target_new) 0.012 on the rewrite prompts. Facts are memorised
late: 300 steps of 16 blocks gave 61% known, a learning rate of 3e-3 instead of 5e-3 73%.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, PreTrainedTokenizerFast

from locedit.scoring import contains_target, greedy_continuations, target_logprobs

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"


#: Extra occurrences of each whole word given to the tokenizer trainer (see train_tokenizer).
WHOLE_WORD_BOOST = 30


def train_tokenizer(
    docs: Sequence[str], vocab_size: int, whole_words: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer trained on ``docs`` (deterministic for the same inputs).

    ``whole_words`` (the dataset's objects) are shown to the BPE trainer
    :data:`WHOLE_WORD_BOOST` extra times, so they become single tokens as common words are in a
    real vocabulary, while the invented names, seen less often, stay split into several tokens.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    boost = [" " + " ".join(whole_words)] * (WHOLE_WORD_BOOST if whole_words else 0)
    tok.train_from_iterator(list(docs) + boost, trainer=trainer)
    wrapped = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    wrapped.model_max_length = 1 << 30  # set properly from n_positions by train_toy_model
    return wrapped


def build_model(toy: dict, vocab_size: int, eos_id: int, seed: int) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (seeded) from the ``toy_model`` config section."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=toy["n_positions"],
        n_embd=toy["n_embd"],
        n_layer=toy["n_layer"],
        n_head=toy["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)  # weight init draws from the global generator
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.generation_config.bos_token_id = eos_id
    return model


def encode_docs(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str]) -> list[torch.Tensor]:
    """Token ids of each document followed by ``<|endoftext|>`` (1-D long tensors)."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(docs), add_special_tokens=False)["input_ids"]
    return [torch.tensor(x + [eos], dtype=torch.long) for x in ids]


def packed_blocks(
    doc_ids: list[torch.Tensor], block: int, generator: torch.Generator
) -> torch.Tensor:
    """One epoch: documents in a seeded order, concatenated, cut into ``[n_blocks, block]``."""
    order = torch.randperm(len(doc_ids), generator=generator)
    stream = torch.cat([doc_ids[i] for i in order.tolist()])
    n = len(stream) // block
    return stream[: n * block].view(n, block)


def lr_at(step: int, toy: dict) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``0.1 * lr``."""
    lr, warm, total = toy["lr"], toy["warmup_steps"], toy["steps"]
    if step < warm:
        return lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_loop(
    model: GPT2LMHeadModel, doc_ids: list[torch.Tensor], toy: dict, seed: int
) -> list[float]:
    """Train ``model`` in place for ``toy['steps']`` steps; returns the per-step losses."""
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": toy["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=toy["lr"],
        betas=(0.9, 0.98),
    )
    model.train()
    losses: list[float] = []
    blocks = torch.empty(0, toy["n_positions"], dtype=torch.long)
    cursor = 0
    t0 = time.perf_counter()
    for step in range(toy["steps"]):
        if cursor + toy["batch_size"] > len(blocks):
            blocks, cursor = packed_blocks(doc_ids, toy["n_positions"], gen), 0
            if len(blocks) < toy["batch_size"]:
                raise ValueError(
                    f"corpus has {len(blocks)} blocks of {toy['n_positions']} tokens, fewer than "
                    f"toy_model.batch_size = {toy['batch_size']}"
                )
        batch = blocks[cursor : cursor + toy["batch_size"]]  # [batch, n_positions]
        cursor += toy["batch_size"]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, toy)
        # The mask is all ones (packed blocks have no padding); passing it tells transformers so.
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % toy["log_every"] == 0 or step + 1 == toy["steps"]:
            recent = float(np.mean(losses[-toy["log_every"] :]))
            logger.info(
                "step %d/%d  loss %.4f  lr %.2e  %.1fs",
                step + 1,
                toy["steps"],
                recent,
                lr_at(step, toy),
                time.perf_counter() - t0,
            )
    model.eval()
    return losses


@torch.no_grad()
def world_knowledge(model, tokenizer, records: Sequence[dict], *, batch_size: int = 64) -> dict:
    """How well a model knows the world's facts (before any edit).

    Returns a dict of: ``frac_known`` (the true object appears in the greedy 36-token continuation
    of the rewrite prompt, the paper's correctness filter), ``paraphrase_acc`` and
    ``neighborhood_acc`` (same test on those prompts), ``median_p_true`` / ``median_p_new``
    (teacher-forced probability of the true / new object after the rewrite prompt),
    ``frac_true_gt_new`` and ``n_records``.
    """
    rws = [r["requested_rewrite"] for r in records]
    prompts = [rw["prompt"].format(rw["subject"]) for rw in rws]
    trues = [rw["target_true"]["str"] for rw in rws]
    news = [rw["target_new"]["str"] for rw in rws]

    def accuracy(pairs: list[tuple[str, str]]) -> float:
        if not pairs:
            return float("nan")
        conts = greedy_continuations(model, tokenizer, [p for p, _ in pairs], batch_size=batch_size)
        return float(np.mean([contains_target(c, t) for c, (_, t) in zip(conts, pairs)]))

    para = [(p, t) for r, t in zip(records, trues) for p in r["paraphrase_prompts"]]
    longest = max(len(tokenizer(p)["input_ids"]) for p, _ in para + list(zip(prompts, trues)))
    if longest + 36 > model.config.n_positions:
        raise ValueError(
            f"toy_model.n_positions = {model.config.n_positions} is too small for a "
            f"{longest}-token prompt plus the 36-token greedy continuation of the known-fact test"
        )
    neigh = [(p, t) for r, t in zip(records, trues) for p in r["neighborhood_prompts"]]
    lp_true = target_logprobs(model, tokenizer, prompts, trues, batch_size=batch_size)
    lp_new = target_logprobs(model, tokenizer, prompts, news, batch_size=batch_size)
    return {
        "n_records": len(records),
        "frac_known": accuracy(list(zip(prompts, trues))),
        "paraphrase_acc": accuracy(para),
        "neighborhood_acc": accuracy(neigh),
        "median_p_true": float(lp_true.exp().median()),
        "median_p_new": float(lp_new.exp().median()),
        "frac_true_gt_new": float((lp_true > lp_new).float().mean()),
    }


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished ``tmp`` directory onto ``out_dir``, discarding any previous one."""
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / out_dir.name)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, out_dir)


def train_toy_model(
    docs: Sequence[str],
    toy: dict,
    seed: int,
    out_dir: str | os.PathLike,
    *,
    records: Sequence[dict] | None = None,
) -> dict:
    """Train tokenizer and model on ``docs`` and save both to ``out_dir`` (atomically).

    Args:
        docs: corpus documents (lines of ``corpus.txt``).
        toy: the ``toy_model`` config section.
        seed: master seed (weights init and batch order).
        out_dir: destination directory (replaced as a whole).
        records: fact-world records; when given, their objects are kept whole by the tokenizer
            and :func:`world_knowledge` of the first ``toy['eval_limit']`` is measured and logged.

    Returns:
        The metrics also written to ``out_dir/metrics.json``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    objects = sorted(
        {
            r["requested_rewrite"][k]["str"]
            for r in records or []
            for k in ("target_true", "target_new")
        }
    )
    tokenizer = train_tokenizer(docs, toy["vocab_size"], whole_words=objects)
    tokenizer.model_max_length = toy["n_positions"]
    doc_ids = encode_docs(tokenizer, docs)
    n_tokens = sum(len(d) for d in doc_ids)
    model = build_model(toy, len(tokenizer), tokenizer.eos_token_id, seed)
    logger.info(
        "toy model: %d layers, d_model %d, vocab %d, %.2fM parameters; corpus %d docs, %d tokens",
        toy["n_layer"],
        toy["n_embd"],
        len(tokenizer),
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(docs),
        n_tokens,
    )
    losses = train_loop(model, doc_ids, toy, seed)
    metrics: dict = {
        "train_seconds": time.perf_counter() - t0,
        # CPU time of this process (all threads): comparable across runs on a shared machine
        "train_cpu_seconds": time.process_time() - c0,
        "final_loss": float(np.mean(losses[-toy["log_every"] :])),
        "corpus_tokens": n_tokens,
        "epochs": toy["steps"] * toy["batch_size"] * toy["n_positions"] / n_tokens,
        "threads": torch.get_num_threads(),
    }
    if records is not None and toy["eval_limit"] > 0:
        metrics.update(world_knowledge(model, tokenizer, records[: toy["eval_limit"]]))
        logger.info(
            "toy model knows %.0f%% of the first %d facts (rewrite prompt), paraphrase accuracy "
            "%.0f%%, neighbourhood accuracy %.0f%%, median p(true) %.3f, median p(new) %.3f",
            100 * metrics["frac_known"],
            metrics["n_records"],
            100 * metrics["paraphrase_acc"],
            100 * metrics["neighborhood_acc"],
            metrics["median_p_true"],
            metrics["median_p_new"],
        )
    logger.info("toy model metrics: %s", metrics)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the model is an ordinary output
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return metrics
