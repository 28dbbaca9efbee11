"""Rule sample_stats_corpus: the statistics corpus sampled from the model (``editing.stats.corpus:
sampled``), one document per line (:mod:`locedit.editing.corpus`)."""

import logging

import torch

from locedit.editing.corpus import sample_corpus
from locedit.io import write_text
from locedit.modeling import load_model
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    model, tok = load_model(**p.model)
    s = p.sampled
    docs = sample_corpus(
        model, tok, n_docs=s["n_docs"], doc_tokens=s["doc_tokens"], top_k=s["top_k"],
        seed_words=s["seed_words"], seed=s["seed"], batch_size=s["batch_size"],
        progress=lambda done, total: logger.info("sampled %d / %d documents", done, total),
    )  # fmt: skip
    logger.info("e.g. %r", docs[0][:200])
    write_text("\n".join(docs) + "\n", snakemake.output.corpus)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
