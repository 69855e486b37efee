"""The typed run record: :class:`Record`, validated when written and when read, schema-versioned.

A record is one JSON object::

    {"schema": "genbench.record/2", "kind": "eval" | "eval-samples",
     "run": {...}, "config": {...}, "model": {...} | absent, "data": {...},
     "sampling": {...} | null, "features": {...} | null,
     "metrics": {key: {"value": number | null, ["value_reason": why null], ...protocol and measured fields}},
     "skipped": {metric name: reason}, ...further sections (e.g. "leaderboard")}

A metric entry is a :class:`harness.core.metric.MetricEntry` in JSON form. Which of its fields
are protocol and which measured is declared by the metric's ``MetricKey`` (``harness.core.metric``).

Versions. ``genbench.record/1`` (flat config, ``bootstrap`` / ``num_boot``, non-finite values
possible) is read through :func:`migrate`, which returns the same record in the current format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "genbench.record/2"
OLD_SCHEMAS = ("genbench.record/1",)
KINDS = ("eval", "eval-samples")

_SAMPLE_FIELDS = ("kid_subsets", "kid_subset_size", "is_splits", "pr_nearest_k", "dc_nearest_k")
_MODEL_FIELDS = ("num_importance", "importance_chunk", "ode_divergence", "ode_probe", "ode_num_probes", "ode_solver",
                 "ode_rtol", "ode_atol", "ode_steps", "straightness_steps")
_CORE = ("schema", "kind", "run", "config", "data", "metrics", "skipped", "model", "sampling", "features")


def _check_entry(key: str, entry: Any) -> None:
    where = f"metric {key!r}"
    if not isinstance(entry, dict) or "value" not in entry:
        raise ValueError(f"{where} must be an object with a 'value'")
    value = entry["value"]
    if value is None:
        if not isinstance(entry.get("value_reason"), str):
            raise ValueError(f"{where} has no value and no 'value_reason' saying why")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} value must be a finite number or null, got {value!r}")
    unc = entry.get("uncertainty")
    if unc is not None and not (isinstance(unc, dict) and isinstance(unc.get("std"), (int, float))):
        raise ValueError(f"{where}.uncertainty must be an object with a numeric 'std'")


@dataclass(frozen=True)
class Record:
    """One run record (see the module docstring). ``extra`` holds further top-level sections."""

    kind: str
    run: dict[str, Any]
    config: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    model: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ValueError(f"unknown record schema {self.schema!r}; expected {SCHEMA!r} (older ones: read_record migrates)")
        if self.kind not in KINDS:
            raise ValueError(f"record kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("run", "config", "data", "metrics", "skipped"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"record field {name!r} must be an object")
        for key, entry in self.metrics.items():
            _check_entry(key, entry)
        clash = set(self.extra) & set(_CORE)
        if clash:
            raise ValueError(f"extra sections may not be named {sorted(clash)}")

    @classmethod
    def from_json(cls, obj: Any) -> Record:
        """Validate a JSON object in the current format (``migrate`` older ones first)."""
        if not isinstance(obj, dict):
            raise ValueError("a record must be a JSON object")
        missing = [k for k in ("kind", "run", "data", "metrics", "skipped") if k not in obj]
        if missing:
            raise ValueError(f"missing field {missing[0]!r}")
        known = {k: obj.get(k) for k in _CORE if k in obj}
        known.setdefault("config", {})
        extra = {k: v for k, v in obj.items() if k not in _CORE}
        return cls(**known, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.schema, "kind": self.kind, "run": self.run, "config": self.config}
        if self.model is not None:
            out["model"] = self.model
        out["data"] = self.data
        if self.kind == "eval" or self.sampling is not None:
            out["sampling"] = self.sampling
        out["features"] = self.features
        out["metrics"] = self.metrics
        out["skipped"] = self.skipped
        out.update(self.extra)
        return out


def _nest_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _SAMPLE_FIELDS + _MODEL_FIELDS and k != "bootstrap"}
    if "bootstrap" in config:
        out["replicates"] = config["bootstrap"]
    sample = {k: config[k] for k in _SAMPLE_FIELDS if k in config}
    model = {k: config[k] for k in _MODEL_FIELDS if k in config}
    if sample:
        out["sample_metrics"] = sample
    if model:
        out["model_metrics"] = model
    return out


def _finite_entry(entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    value = entry.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        entry["value"], entry["value_reason"] = None, f"the value was {value}"
    elif value is None and "value_reason" not in entry:  # schema 1 wrote NaN and ±inf as a bare null
        entry["value_reason"] = "not finite (NaN or ±inf; schema 1 did not record which)"
    unc = entry.get("uncertainty")
    if isinstance(unc, dict) and "num_boot" in unc:
        entry["uncertainty"] = {("num_replicates" if k == "num_boot" else k): v for k, v in unc.items()}
    return entry


def migrate(obj: dict[str, Any]) -> dict[str, Any]:
    """A record of any known schema, in the current format (a new object; the input is unchanged).

    From ``genbench.record/1``: the flat metric options of ``config`` move into its
    ``sample_metrics`` / ``model_metrics`` sub-configs, ``config.bootstrap`` becomes
    ``config.replicates``, ``uncertainty.num_boot`` becomes ``uncertainty.num_replicates``, and a
    non-finite metric value (schema 1 wrote some as a bare null) becomes null with a ``value_reason``.
    """
    schema = obj.get("schema") if isinstance(obj, dict) else None
    if schema == SCHEMA:
        return obj
    if schema not in OLD_SCHEMAS:
        raise ValueError(f"unknown record schema {schema!r}; expected {SCHEMA!r} or one of {', '.join(OLD_SCHEMAS)}")
    out = dict(obj)
    out["schema"] = SCHEMA
    if isinstance(obj.get("config"), dict):
        out["config"] = _nest_config(obj["config"])
    if isinstance(obj.get("metrics"), dict):
        out["metrics"] = {k: _finite_entry(v) if isinstance(v, dict) else v for k, v in obj["metrics"].items()}
    return out
