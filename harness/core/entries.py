"""``ModelEntry``: what the ``MODELS`` registry holds for one model (baselines declare theirs)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory(**config)`` builds it."""

    name: str
    family: str
    factory: str  # lazy "module:attr"
    description: str
    tiny_config: dict[str, Any] | None = None  # a seconds-sized config for the contract test (trainable models)
    example_config: dict[str, Any] | None = None  # a valid config for models without defaults (listing)

    def build(self, config: dict[str, Any] | None = None) -> Any:
        module_name, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**(config or {}))
