"""Rule validate_inputs: the first stage, before any rule that loads a model.

Reads the dataset (``input.raw``) the way ``prepare_records`` will, and checks every record (types,
shapes, unique integer ids, subject located among the prompt's tokens, every prompt within the
model's context), listing every problem at once. Writes a small deterministic report
(``output.report``, the candidate; ``publish_validation`` publishes it for the model rules and
``prepare_records``) that also records what the study's names stand for (``params.identity``) and
the content hashes of the model's files and of the dataset file: planning and
``record_provenance`` check them later. (The config was checked against the model's
``config.json`` when the run was planned.)
"""

import logging

from locedit.files import file_sha256
from locedit.io import write_json
from locedit.provenance import model_files
from locedit.modeling import load_tokenizer
from locedit.data.records import LengthLimits, RecordError, load_records, validate_records
from locedit.validation import fetched_model_shape, problem_report
from locedit.workflow import fail, records_digest, setup_logging

logger = logging.getLogger(__name__)


def main(snakemake) -> None:
    setup_logging(snakemake)
    p = snakemake.params
    shape, problems = fetched_model_shape(p.model_source, p.model_revision)
    raw = snakemake.input.raw
    tok = None
    if shape is not None:
        try:
            tok = load_tokenizer(p.model_source, p.model_revision)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            problems.append(f"model.source: cannot load the tokenizer of {p.model_source!r}: {first}")
    try:
        records = load_records(raw, p.fmt, seed=p.seed, limit=p.limit)
        limits = None if tok is None else LengthLimits(n_ctx=shape.n_ctx, generate=p.generate)
        validate_records(records, tok, limits, source=f"{raw} (dataset.path / dataset.source)")
        subjects = {r["requested_rewrite"]["subject"] for r in records}
        if p.str_kinds and len(subjects) < 2:
            problems.append(f"tracing.runs: {', '.join(p.str_kinds)} replace each fact's subject by another "
                            f"subject of the dataset, which has only {sorted(subjects)}")
    except RecordError as err:
        problems.append(str(err))
    if problems:
        fail(problem_report(problems, "the inputs"))
    report = {
        "records": len(records),
        "sha256": records_digest(records),
        "model": {"architecture": shape.architecture, "n_layers": shape.n_layers,
                  "n_ctx": shape.n_ctx},
        "identity": p.identity,
        "model_files": model_files(p.model_dir) if p.model_dir else None,
        "dataset_sha256": file_sha256(raw),
    }
    logger.info("valid: %d records; model %s", len(records), report["model"])
    write_json(report, snakemake.output.report)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
