"""Building frozen config dataclasses from plain mappings (suite files, JSON), unknown keys refused.

A run config composes sub-configs (``harness.core.options``); their fields may be given flat
(``ode_rtol: 1e-4``) or nested (``model_metrics: {ode_rtol: 1e-4}``). ``bootstrap``, the old
name of ``replicates``, is accepted with a warning.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import fields
from typing import Any, TypeVar

from harness.core.options import SUBCONFIGS, split_flat

C = TypeVar("C")
log = logging.getLogger(__name__)

RENAMED = {"bootstrap": "replicates"}
"""Old option name -> new one, accepted with a warning."""


def renamed_option(old: str) -> str:
    """The warning for an option given by its old name."""
    return f"option {old!r} is now called {RENAMED[old]!r} (half-sample replicates, not a bootstrap); using it as such"


def config_from_dict(cls: type[C], options: dict[str, Any]) -> C:
    """``cls(**options)``, but an unknown key is a ValueError that lists the known ones."""
    options = dict(options)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for old, new in RENAMED.items():
        if old in options and new in known:
            if new in options:
                raise ValueError(f"give {new!r} only (not also its old name {old!r})")
            log.warning(renamed_option(old))
            options[new] = options.pop(old)
    subs = {name: SUBCONFIGS[name] for name in known if name in SUBCONFIGS}
    if subs:
        options = split_flat(options, subs)
    unknown = sorted(set(options) - known)
    if unknown:
        flat = sorted(known - set(subs) | {f.name for c in subs.values() for f in fields(c)})
        close = sorted({c for u in unknown for c in difflib.get_close_matches(u, flat, n=1, cutoff=0.75)})
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown option(s) {unknown}.{hint} Known: {flat}")
    return cls(**options)
