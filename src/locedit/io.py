"""Atomic output writing: nothing half-written is ever taken for finished.

Every writer goes to a temporary file in the destination directory and ``os.replace``s it into
place, so a job killed mid-write leaves either the old file or none. Per-datapoint checkpoint
directories (:func:`open_checkpoints`) let a killed job resume where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from locedit.files import atomic_path  # noqa: F401 (re-exported: writers import it from here)

logger = logging.getLogger(__name__)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def checkpointed(cache: Path | None, case_id: int, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``(value, reused)``: the JSON checkpoint ``cache/case_{case_id}.json`` when it exists,
    else ``compute()``, checkpointed there (atomically) when ``cache`` is set (a directory from
    :func:`open_checkpoints`)."""
    done = read_checkpoint(cache, case_id)
    if done is not None:
        return done, True
    value = compute()
    write_checkpoint(cache, case_id, value)
    return value, False


def read_checkpoint(cache: Path | None, case_id: int) -> Any | None:
    """The checkpoint of ``case_id`` in ``cache`` (None when there is none or no cache)."""
    path = cache / f"case_{case_id}.json" if cache is not None else None
    return read_json(path) if path is not None and path.exists() else None


def write_checkpoint(cache: Path | None, case_id: int, value: Any) -> None:
    """Write ``value`` as the checkpoint of ``case_id`` (atomically; nothing without a cache)."""
    if cache is not None:
        write_json(value, cache / f"case_{case_id}.json")


def _chunk_path(cache: Path, case_ids: list[int]) -> Path:
    # Named by its first and last case and its size: another chunking never reads this file.
    return cache / f"chunk_{case_ids[0]}-{case_ids[-1]}_{len(case_ids)}.json"


def read_chunk(cache: Path | None, case_ids: list[int]) -> list | None:
    """The checkpointed values of a chunk of cases, in order (None when it is not checkpointed,
    or there is no cache); a file of other cases is an error, never a silent reuse."""
    if cache is None or not (path := _chunk_path(cache, case_ids)).exists():
        return None
    got = read_json(path)
    if [int(c) for c in got["case_ids"]] != list(case_ids):
        raise ValueError(f"{path}: checkpoint of cases {got['case_ids']}, expected {case_ids}")
    return got["values"]


def write_chunk(cache: Path | None, case_ids: list[int], values: list) -> None:
    """Checkpoint a chunk of cases as one file, renamed into place (all of it or nothing)."""
    if cache is not None:
        write_json({"case_ids": list(case_ids), "values": values}, _chunk_path(cache, case_ids))


def open_checkpoints(cache: str | os.PathLike, fingerprint: str | None) -> Path:
    """Make ``cache`` the checkpoint directory of ``fingerprint`` and return it.

    Checkpoints written under another fingerprint (other settings, code or inputs) are wiped,
    never reused; ``None`` keeps whatever is there.
    """
    cache = Path(cache)
    stamp = cache / "FINGERPRINT"
    if fingerprint is not None and cache.exists():
        if not stamp.exists() or stamp.read_text() != fingerprint:
            logger.info("discarding checkpoints of other settings in %s", cache)
            shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    for tmp in cache.glob(".*.tmp"):  # a write cut off by a kill (atomic_path's temporary)
        logger.info("removing %s, left by a killed write", tmp)
        tmp.unlink()
    if fingerprint is not None and not stamp.exists():
        write_text(fingerprint, stamp)
    return cache
