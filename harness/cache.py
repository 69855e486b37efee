"""Content-addressed cache of reference features and statistics.

A cache key is the sha256 of a canonical JSON description of *everything* the cached value
depends on: the data's content hash, the feature extractor's protocol (name, weights sha256,
resize, channel handling, versions) and the exact rows used. Renaming a data set or moving a
folder therefore never serves stale features, and any protocol change misses the cache.

Entries are ``.npz`` files under ``$GENBENCH_CACHE`` (default ``~/.cache/genbench``), written
atomically, so a crash leaves no partial entry.
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


def load(kind: str, key: str) -> dict[str, np.ndarray] | None:
    """Return the arrays cached under ``kind/key``, or None on a miss or an unreadable entry."""
    path = cache_root() / kind / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable cache entry %s (%s); it will be recomputed", path, err)
        return None


def store(kind: str, key: str, arrays: dict[str, np.ndarray], description: dict[str, Any]) -> Path:
    """Write ``arrays`` under ``kind/key`` atomically, with the key's description beside them."""
    path = cache_root() / kind / f"{key}.npz"
    payload = dict(arrays)
    payload["_description_json"] = np.array(json.dumps(description, sort_keys=True, default=str))
    with atomic_open(path) as handle:
        np.savez(handle, **payload)
    return path
