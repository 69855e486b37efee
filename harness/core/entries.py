"""``ModelEntry``: what the ``MODELS`` registry holds for one model (baselines declare theirs)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
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
    teacher: str | None = None  # the registered model a ``teacher_checkpoint`` of this one names (the contract test trains it first)

    def build(self, config: dict[str, Any] | None = None) -> Any:
        module_name, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**(config or {}))


def pinned(model: str, field: str, value: object, overrides: Mapping[str, Any],
           others: Mapping[object, str] | None = None) -> dict[str, Any]:
    """``overrides`` with ``field`` set to ``value``, for a registered model that fixes that field
    (``maf`` fixes ``direction="maf"``); a contradicting override is refused, naming the model of
    ``others`` (value -> model name) that has it."""
    given, others = overrides.get(field, value), others or {}
    if given != value:
        use = f"the model {others[given]!r}" if given in others else \
            "one of the models " + ", ".join(repr(m) for m in dict.fromkeys((model, *others.values())))
        raise ValueError(f"{field}={given!r} contradicts the model {model!r} ({field}={value!r}); use {use} instead")
    return {**overrides, field: value}
