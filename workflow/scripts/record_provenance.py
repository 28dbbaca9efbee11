"""Rule record_provenance: the study's provenance record, after every other result.

Checks that the model's files are still those ``validate_inputs`` recorded before any model job
(``input.report``; ``params.model_dir``, None for a hub model), then writes
``output.provenance``: the study as planned (``params.study``: names, what they stand for, the
shared artefacts, the config and its hash), the recorded content hashes and software versions.
"""

import logging

from locedit.io import read_json, write_json
from locedit.provenance import changed_files, provenance_record
from locedit.workflow import fail, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    report = read_json(snakemake.input.report)
    recorded = report.get("model_files") or {}
    changed = changed_files(recorded, p.model_dir) if p.model_dir and recorded else []
    if changed:
        fail(
            f"model.source: {len(changed)} file(s) of {p.model_dir} changed after validation "
            f"recorded them ({', '.join(changed[:3])}): the study's results may mix two models. "
            "Recompute them with `snakemake --forcerun validate_inputs`"
        )
    record = provenance_record(p.study, report)
    logger.info("provenance: config %s, %d model files", record["config_sha256"][:12], len(recorded))
    write_json(record, snakemake.output.provenance)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
