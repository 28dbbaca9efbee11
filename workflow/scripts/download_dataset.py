"""Rule download_dataset: fetch the published dataset file (needs a network; never run in tests).

Output ``raw``. Written atomically so an interrupted download is never taken for the dataset.
"""

import logging
import urllib.request

from locedit.io import atomic_path
from locedit.workflow import setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    url = snakemake.params.url
    logger.info("downloading %s", url)
    with atomic_path(snakemake.output.raw) as tmp, urllib.request.urlopen(url, timeout=600) as r:
        tmp.write_bytes(r.read())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
