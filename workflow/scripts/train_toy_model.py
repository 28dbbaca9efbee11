"""Rule train_toy_model: train the tiny GPT-2 and its tokenizer on the fact-world corpus.

Inputs ``corpus`` (one document per line) and, when the rule lists it, ``records`` (the world's
records, used only to log how many facts the trained model knows); params ``toy`` (the
``toy_model`` config section) and ``seed``. Writes the ``save_pretrained`` directory that contains
the declared output ``config`` (atomically, see :mod:`locedit.data.toy`), plus ``metrics.json`` and
``made_from.json`` (``params.made_from``: the settings behind the directory's key, and the world
it was trained on, the corpus's directory: where the one-fact API finds the corpus).
"""

import logging
from pathlib import Path

import torch

from locedit.io import read_json, write_json
from locedit.data.toy import train_toy_model
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    p = snakemake.params
    docs = [line for line in Path(snakemake.input.corpus).read_text().splitlines() if line.strip()]
    records_path = snakemake.input.get("records")
    records = read_json(records_path) if records_path else None
    out_dir = Path(snakemake.output.config).parent
    train_toy_model(docs, dict(p.toy), int(p.seed), out_dir, records=records)
    world_dir = Path(snakemake.input.corpus).parent.as_posix()
    write_json({"model": p.made_from, "world_dir": world_dir}, out_dir / "made_from.json")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
