"""File primitives every layer uses: atomic writes and content hashes (plain Python: planning
imports this module).

File hashes are cached by (path, size, mtime) in ``.snakemake/locedit/hashes.json`` of the working
directory, so planning hashes a multi-GB model or corpus once, not on every ``snakemake`` call.

Every writer goes to a temporary file in the destination directory and ``os.replace``s it into
place, so a job killed mid-write leaves either the old file or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The per-working-directory hash cache (under Snakemake's own metadata directory).
HASH_CACHE = Path(".snakemake", "locedit", "hashes.json")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the mode a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


_MEMO: dict[str, dict] = {}


def cached_file_sha256(path: str | os.PathLike, cache: str | os.PathLike = HASH_CACHE) -> str:
    """``file_sha256(path)``, reused while the file keeps its size and modification time."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    entries = _MEMO.get(str(cache))
    if entries is None:
        try:
            entries = json.loads(Path(cache).read_text())
        except (OSError, ValueError):
            entries = {}
        _MEMO[str(cache)] = entries
    hit = entries.get(str(path))
    if hit and hit[:2] == stamp:
        return hit[2]
    sha = file_sha256(path)
    entries[str(path)] = [*stamp, sha]
    try:  # a cache that cannot be written costs time, never a result
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(entries))
    except OSError:
        pass
    return sha
