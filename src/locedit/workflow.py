"""Snakemake glue shared by every script: logging into the rule's log file, param unpacking."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path


def setup_logging(snakemake) -> logging.Logger:
    """Send ``logging`` (and uncaught tracebacks) to ``snakemake.log[0]`` and stderr.

    Call first thing in every script's ``main`` so a failure lands in the rule's log.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if len(snakemake.log):
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    def excepthook(exc_type, exc, tb):
        from locedit.data.records import RecordError
        from locedit.validation import ConfigError

        if issubclass(exc_type, (ConfigError, RecordError)):  # input problems: the message says it
            logging.getLogger("locedit").error("%s", exc)
            return
        logging.getLogger("locedit").error(
            "uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb))
        )

    sys.excepthook = excepthook
    return logging.getLogger("locedit")


class _SharedStream:
    """The log file's one writer (the logging handler's stream), lent to progress bars.

    A second handle on the same file would write at its own offset and overwrite log lines (or
    be overwritten: the handler truncates at start), leaving fragments; closing this proxy only
    flushes, so ``with log_stream(...)`` blocks leave the handler working.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> _SharedStream:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def log_stream(snakemake):
    """A file object for tqdm progress bars: the rule's log, written through the same stream
    as :func:`setup_logging`'s handler (else stderr)."""
    if len(snakemake.log):
        target = Path(snakemake.log[0]).resolve()
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == target:
                return _SharedStream(handler.stream)
        return open(target, "a", buffering=1)
    return _SharedStream(sys.stderr)


def job_fingerprint(settings: dict, inputs: Iterable[str]) -> str:
    """Hash of everything a job's checkpoints depend on: its ``settings`` (params: settings and
    code hash) and the content and modification time of every input file (a retrained model
    rewrites its config.json), so a rerun with other settings or inputs never reuses them."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(str(f) for f in inputs):
        if Path(path).is_file():
            h.update(Path(path).read_bytes())
            h.update(str(Path(path).stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def records_digest(records: list) -> str:
    """SHA-256 of the records' canonical JSON: what ``validate_inputs`` checked is what
    ``prepare_records`` publishes."""
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def fail(message: str) -> None:
    """End the job with ``message`` in its log and on stderr, without a traceback: for input
    problems a person fixes (the message says what and where), not bugs."""
    logging.getLogger("locedit").error("%s", message)
    raise SystemExit(1)
