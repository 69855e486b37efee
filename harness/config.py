"""Building frozen config dataclasses from plain mappings (suite files, JSON), unknown keys refused."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

C = TypeVar("C")


def config_from_dict(cls: type[C], options: dict[str, Any]) -> C:
    """``cls(**options)``, but an unknown key is a ValueError that lists the known ones."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)
