"""Rule import_gguf_model: dequantise a GGUF file once into a ``save_pretrained`` directory.

Output ``config`` (in the directory ``resources/models/{stem}-{sha12}/``, keyed by the file's
content); the directory also holds ``import.json`` (the GGUF's SHA-256, the dequantised dtype).
Every model job then loads that directory in seconds.
"""

import logging
from pathlib import Path

import torch

from locedit.files import file_sha256
from locedit.gguf import import_gguf
from locedit.workflow import fail, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    torch.set_num_threads(snakemake.threads)
    gguf = snakemake.input.gguf
    digest = file_sha256(gguf)
    if digest != snakemake.params.sha256:
        fail(f"model.source: {gguf} changed since the workflow was planned (sha256 {digest}); "
             "run snakemake again")
    record = import_gguf(gguf, Path(snakemake.output.config).parent, sha256=digest)
    logger.info("imported %s: %s", gguf, record)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
