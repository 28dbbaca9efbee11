"""Loading models and tokenizers once per job, with explicit device and dtype.

The built-in toy model is saved with ``save_pretrained`` and loaded through exactly the same
``AutoModelForCausalLM`` / ``AutoTokenizer`` path as a hub id or a local checkpoint.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@functools.cache
def _cache_keyword(forward_cls: type) -> str:
    params = inspect.signature(forward_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: torch.nn.Module, cache) -> dict:
    """``{"cache": cache}`` for a model whose ``forward`` takes the current key/value-cache
    keyword, ``{"past_key_values": cache}`` for one that still takes the old one (transformers
    renamed it during 5.x and warns on every call with the old name)."""
    return {_cache_keyword(type(model)): cache}


def output_cache(output):
    """The key/value cache a forward pass returned, under its current or its old name."""
    got = getattr(output, "cache", None)
    return got if got is not None else getattr(output, "past_key_values", None)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; CPU results are then bit-identical run to run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_hub_source(source: str, revision: str | None = None) -> None:
    """Fail in one line, not after the hub client's retries, when ``source`` is a hub id that is
    neither cached (at ``revision``) nor reachable."""
    from locedit.validation import ConfigError, fetched_model_shape, source_kind

    if source_kind(source) == "hub":
        _, problems = fetched_model_shape(source, revision)
        if problems:
            raise ConfigError(problems[0])


def load_tokenizer(source: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer of ``source`` (at a hub ``revision``) with a pad token (EOS when it has none)
    for batched scoring."""
    tok = AutoTokenizer.from_pretrained(source, revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    source: str, *, dtype: str = "float32", device: str = "auto", revision: str | None = None
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a hub id or a local directory, in eval mode.

    Args:
        source: hub id (``EleutherAI/gpt-j-6B``) or a directory written by ``save_pretrained``.
        dtype: one of :data:`DTYPES`.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` …
        revision: a hub model's branch, tag or commit (None: the default branch).
    """
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dev = resolve_device(device)
    check_hub_source(source, revision)
    # A job loads its model once; transformers' per-tensor "Loading weights" bar would print one
    # bar per job on the console (70+ in a default run) and says nothing the log line below doesn't.
    hf_logging.disable_progress_bar()
    tok = load_tokenizer(source, revision)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype], revision=revision)
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    logger.info(
        "loaded %s (%s) on %s as %s, %.1fM parameters",
        source,
        type(model).__name__,
        dev,
        dtype,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tok
