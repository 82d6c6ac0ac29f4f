"""A validated grid's ready index kept on disk, so that a restarted worker does not parse, validate and index the
same grid file again (issue #23: after a crash, the board should be current within seconds, and a worker spent
about 1.2 CPU-s of its start-up on the shipped grid; loading the kept index takes about 0.1 s).

An entry is named by a digest of everything the index is computed from: the grid file's bytes and path, the snap
tolerance, the source of the modules that parse, validate and index it, and the versions of Python, shapely and
numpy. Any change to one of these misses the cache, and the file is parsed, validated and indexed as before. Only
an index whose file passed validation is stored. An entry that cannot be read (truncated, another format) is
ignored and replaced. Entries are written to a temporary file and renamed, so a reader never sees half of one.

The entries are pickles under the worker's own `CITYOPS_VAR` (`var/cache/grid`), the directory that holds its
lock files and the local stack's data: whoever can write there can already change what the worker runs on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

log = logging.getLogger("cityops.grid")

_HERE = Path(__file__).resolve().parent
# the modules whose code decides what a loaded, validated index holds
_CODE = ("cache.py", "datum.py", "gridfile.py", "index.py", "lattice.py", "results.py", "validate.py")
_KEEP = 4            # entries kept per directory (older ones are removed when a new one is stored)


def _code_digest() -> bytes:
    h = hashlib.sha256()
    for name in _CODE:
        h.update((_HERE / name).read_bytes())
    return h.digest()


def cache_key(data: bytes, source: str, snap_tolerance_m: float) -> str:
    """The entry name of the index of a grid file with these bytes, read from `source`."""
    import numpy
    import shapely

    h = hashlib.sha256()
    for part in (sys.version, shapely.__version__, numpy.__version__, source, repr(float(snap_tolerance_m))):
        h.update(part.encode())
        h.update(b"\0")
    h.update(_code_digest())
    h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def load_cached(directory: Path, key: str) -> Any | None:
    """The index stored under `key`, or None when there is none or it cannot be read."""
    path = directory / f"{key}.pickle"
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as err:            # a damaged entry is a miss; it is replaced after the full load
        log.warning("grid cache %s unreadable, loading the grid file instead: %s", path, err)
        return None


def store(directory: Path, key: str, index: Any) -> None:
    """Keep `index` under `key` (best effort: a cache that cannot be written only costs the next start time)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".grid-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, directory / f"{key}.pickle")
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        entries = sorted(directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[_KEEP:]:
            with suppress(OSError):
                old.unlink()
    except OSError as err:
        log.warning("grid cache not written under %s: %s", directory, err)

