"""Rule generate_context_templates: ROME's and MEMIT's context templates, sampled once per model.

Writes ``{"rome": [...], "memit": [...], "seed": ..., "settings": {...}}``; each list starts with
``"{}"`` (the bare prompt) followed by ``sampled text + ". {}"`` (paper-spec §6.1, §6.2).
"""

import logging

import torch

from locedit.editing.compute_kv import generate_context_templates
from locedit.io import write_json
from locedit.modeling import load_model
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    cfg = p.templates
    model, tok = load_model(**p.model)
    templates = generate_context_templates(
        model,
        tok,
        seed=p.seed,
        top_k=cfg["top_k"],
        rome_lengths=cfg["rome_lengths"],
        memit_prompts=cfg["memit_prompts"],
        memit_lengths=cfg["memit_lengths"],
    )
    for method, items in templates.items():
        logger.info("%s: %d templates, e.g. %r", method, len(items), items[1:3])
    write_json({**templates, "seed": p.seed, "settings": cfg}, snakemake.output.templates)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
