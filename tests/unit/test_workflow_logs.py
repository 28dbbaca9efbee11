"""A job's log has one writer: log lines and progress bars never overwrite each other."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

from tqdm import tqdm

from locedit.workflow import log_stream, setup_logging


def test_log_lines_and_progress_bars_share_one_writer(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("stale text of an earlier attempt\n")
    job = SimpleNamespace(log=[str(log)])
    setup_logging(job)
    logger = logging.getLogger("locedit.test")
    logger.info("first line")
    with log_stream(job) as progress:
        for i in tqdm(range(40), desc="rome L0", file=progress, mininterval=0):
            if i % 10 == 0:
                logger.info("case %d done", i)
    stream = log_stream(job)  # also usable without a with block, and closing it is harmless
    stream.close()
    logger.info("last line")
    logging.getLogger().handlers.clear()
    text = log.read_text()
    assert "stale text" not in text  # each attempt's log starts empty
    for line in ["first line", "case 0 done", "case 30 done", "last line"]:
        assert sum(line in row for row in text.splitlines()) == 1, line
    # no write lands on another: the bar's first and last updates both survive
    assert "rome L0:   0%" in text and "rome L0: 100%" in text
    # every log record is whole (a bar's carriage return may precede it on the same line)
    records = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO locedit\.test: [a-z0-9 ]+\n", text)
    assert len(records) == 6


def test_input_errors_are_logged_without_a_traceback(tmp_path):
    import sys

    from locedit.validation import ConfigError

    log = tmp_path / "job.log"
    setup_logging(SimpleNamespace(log=[str(log)]))
    try:
        raise ConfigError("model.source: hub model 'x/y' is not cached")
    except ConfigError:
        sys.excepthook(*sys.exc_info())
    try:
        raise KeyError("a bug")
    except KeyError:
        sys.excepthook(*sys.exc_info())
    logging.getLogger().handlers.clear()
    sys.excepthook = sys.__excepthook__
    text = log.read_text()
    assert "ERROR locedit: model.source: hub model 'x/y' is not cached\n" in text
    assert text.count("Traceback") == 1 and "a bug" in text  # a bug keeps its traceback
