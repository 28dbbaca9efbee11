"""Rule download_dataset: fetch the published dataset file (needs a network; never run in tests).

Output ``raw``. Written atomically so an interrupted download is never taken for the dataset;
checked against ``dataset.sha256`` when it is set (a mismatch keeps no file).
"""

import hashlib
import logging
import urllib.request

from locedit.io import atomic_path
from locedit.workflow import fail, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    url = snakemake.params.url
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=600) as r:
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    expected = snakemake.params.sha256
    logger.info("%d bytes, sha256 %s", len(data), digest)
    if expected is not None and digest != expected:
        fail(f"dataset.sha256: {url} has sha256 {digest}, expected {expected}; file not kept")
    with atomic_path(snakemake.output.raw) as tmp:
        tmp.write_bytes(data)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
