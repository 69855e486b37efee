"""Content-addressed cache of reference features and statistics.

A cache key is the sha256 of a canonical JSON description of *everything* the cached value
depends on: the data's content hash, the feature extractor's protocol (name, weights sha256,
resize, channel handling, versions) and the exact rows used. Renaming a data set or moving a
folder therefore never serves stale features, and any protocol change misses the cache.

Entries are ``.npz`` files under ``$GENBENCH_CACHE`` (default ``~/.cache/genbench``), written
atomically, so a crash leaves no partial entry. Each entry carries the sha256 of its arrays
(names, dtypes, shapes and bytes), checked on load: an entry that is unreadable, altered, lacks
its checksum or lacks an array the caller needs is ignored with a warning, recomputed and
replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.atomic import atomic_open

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The cache folder: ``$GENBENCH_CACHE`` or ``~/.cache/genbench``."""
    return Path(os.environ.get("GENBENCH_CACHE") or Path.home() / ".cache" / "genbench")


def cache_key(description: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``description`` (sorted keys, no whitespace)."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' sorted names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(memoryview(a).cast("B") if a.size else b"")
    return digest.hexdigest()


def load(kind: str, key: str, *, required: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """The arrays cached under ``kind/key``, or None on a miss or an entry that cannot be trusted
    (unreadable, checksum absent or wrong, an array of ``required`` missing)."""
    path = cache_root() / kind / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable cache entry %s (%s); it will be recomputed", path, err)
        return None
    recorded = arrays.pop("_sha256", None)
    arrays.pop("_description_json", None)
    missing = sorted(set(required) - set(arrays))
    problem = None
    if recorded is None:
        problem = "it has no checksum"
    elif str(recorded) != arrays_sha256(arrays):
        problem = "its checksum does not match its contents"
    elif missing:
        problem = f"it lacks {missing}"
    if problem:
        log.warning("ignoring cache entry %s: %s; it will be recomputed", path, problem)
        return None
    return arrays


def store(kind: str, key: str, arrays: dict[str, np.ndarray], description: dict[str, Any]) -> Path:
    """Write ``arrays`` under ``kind/key`` atomically, with their checksum and the key's description."""
    path = cache_root() / kind / f"{key}.npz"
    payload = dict(arrays)
    payload["_sha256"] = np.array(arrays_sha256(arrays))
    payload["_description_json"] = np.array(json.dumps(description, sort_keys=True, default=str))
    with atomic_open(path) as handle:
        np.savez(handle, **payload)
    return path
