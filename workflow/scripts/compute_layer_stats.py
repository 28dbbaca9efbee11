"""Rule compute_layer_stats: second-moment statistics of every requested layer, one corpus pass.

Per-layer ``layer_{l}.npz`` files (ROME's format) are written next to the declared output, the
manifest, which is written last and so marks completion. Partial sums are checkpointed to
``partial.pt`` in the same directory; rerunning a killed job resumes from them. Layers present
among ROME's published files (``rome_npz_dir``) are copied instead of computed; a real model
without a corpus of its own must find every layer there (the job fails naming the missing ones
rather than compute them from the fact world's text).
"""

import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from locedit.editing.covariance import compute_layer_stats, missing_rome_layers, write_manifest
from locedit.modeling import load_model
from locedit.workflow import fail, log_stream, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    s = p.stats
    out_dir = Path(snakemake.output.manifest).parent
    model, tok = load_model(**p.model)
    if p.world_corpus and p.real_model:
        # A real model's statistics must never come from the fact world's invented text: every
        # layer has to be among ROME's files (planning has checked the directory exists).
        missing = missing_rome_layers(model, s["layers"], s["rome_npz_dir"], s["rome_npz_pattern"])
        if missing:
            fail(
                f"editing.stats.rome_npz_dir: {s['rome_npz_dir']} has no statistics for layer(s) "
                f"{missing} of {p.model['source']} (file pattern {s['rome_npz_pattern']!r}); add "
                "them, or set editing.stats.corpus (a text file, or sampled) to compute them"
            )
    stream = log_stream(snakemake)
    try:
        manifest = compute_layer_stats(
            model,
            tok,
            snakemake.input.get("corpus") or None,  # none: every layer from ROME's files
            out_dir,
            layers=s["layers"],
            sample_size=s["sample_size"],
            max_length=s["max_length"],
            batch_size=s["batch_size"],
            precision=s["precision"],
            seed=s["seed"],
            checkpoint_every=s["checkpoint_every"],
            rome_npz_dir=s["rome_npz_dir"],
            rome_npz_pattern=s["rome_npz_pattern"],
            progress=lambda it, total: tqdm(it, total=total, file=stream, desc="stats", mininterval=10),
        )
    finally:
        if stream is not sys.stderr:
            stream.close()
    manifest["model"] = p.model["source"]
    manifest["format"] = p.format
    manifest["identity"] = p.identity  # checked when a study that would read them is planned
    write_manifest(manifest, out_dir)
    logger.info(
        "statistics of %d layers over %d documents / %d tokens in %s",
        len(manifest["layers"]), manifest["n_documents"], manifest["n_tokens"], out_dir,
    )  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
