"""One generic registry for models, datasets, metrics, feature extractors and suites.

Entries are registered by name (kebab-case) as either an object or a lazy ``"module:attr"``
string, so that listing what exists never imports heavy optional dependencies. Pattern entries
(``gaussian-<d>``) are handled by a *resolver*: a callable that maps a name to an object or
returns ``None``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-<>]*$")


class RegistryError(KeyError):
    """An unknown or duplicate registry name. ``str()`` gives the full, readable message."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"lazy registry target {target!r} must look like 'package.module:attribute'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name -> object map with lazy imports, duplicate checks and "did you mean" errors.

    >>> r = Registry[int]("things")
    >>> r.register("one", 1, description="the number one")
    >>> r.get("one")
    1
    """

    def __init__(self, kind: str, *, loader: Callable[[], None] | None = None) -> None:
        """``loader`` (optional) registers further entries the first time the registry is read,
        so modules that register themselves can import this registry without an import cycle."""
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._descriptions: dict[str, str] = {}
        self._resolvers: list[tuple[str, Callable[[str], T | None], str]] = []
        self._loader = loader

    def _load(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader()

    def register(self, name: str, obj: T | str, *, description: str = "") -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` string) under ``name``."""
        if not _NAME.match(name):
            raise ValueError(
                f"{self.kind} name {name!r} must be lower case: letters, digits, '-' (e.g. 'mnist5k-train'), "
                "or '_' for metric keys (e.g. 'elbo_bpd')"
            )
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._descriptions[name] = description

    def register_pattern(self, pattern: str, resolver: Callable[[str], T | None], *, description: str = "") -> None:
        """Register a family of names (shown as ``pattern`` in listings) resolved on demand."""
        self._resolvers.append((pattern, resolver, description))

    def get(self, name: str) -> T:
        """Return the entry for ``name``, importing it if it was registered lazily."""
        self._load()
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, str):
                entry = _import_target(entry)
                self._entries[name] = entry
            return entry  # type: ignore[return-value]
        for _, resolver, _ in self._resolvers:
            found = resolver(name)
            if found is not None:
                return found
        raise RegistryError(self._unknown_message(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._load()
        if name in self._entries:
            return True
        return any(resolver(name) is not None for _, resolver, _ in self._resolvers)

    def names(self) -> list[str]:
        """Registered names (sorted), then pattern names as written (``gaussian-<d>``)."""
        self._load()
        return sorted(self._entries) + [p for p, _, _ in self._resolvers]

    def registered(self) -> list[str]:
        """Registered names in registration order (pattern names excluded)."""
        self._load()
        return list(self._entries)

    def describe(self) -> Iterator[tuple[str, str]]:
        """(name, description) pairs for ``genbench ls``."""
        self._load()
        for name in sorted(self._entries):
            yield name, self._descriptions[name]
        for pattern, _, description in self._resolvers:
            yield pattern, description

    def _unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}."

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
