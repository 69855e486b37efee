"""Leaderboard columns: what a table shows, read from run records only.

A column is either a metric key of the record (``fid``, ``precision``, ``bpd``, ``nfe_mean``, ...;
its standard error is the record's ``stderr`` or half-sample ``uncertainty.std``) or one of the
derived quantities below, each computed from fields the record already holds:

* ``parameters`` — the model's parameter count;
* ``*_nll_nats`` — negative log-likelihood in nats per example from ``bpd`` / ``elbo_bpd`` /
  ``iwae_bpd``: nats = bits/dim · D · ln 2 (D = dimensions per example). For the bounds this is
  the negative bound, i.e. an upper bound on the NLL (Burda et al. 2016 report L_5000 this way);
* ``kl_nats`` — the mean KL(q(z|x) ‖ p(z)) over the evaluation set, the sum of the per-dimension
  KLs recorded with ``kl_active_dims``; ``kl_per_dim`` = kl_nats / latent dimensions;
* ``recon_nats`` — the reconstruction term −E_q log p(x|z) = −ELBO − KL, in nats per example;
* ``bpd_nfe`` — network evaluations per example of the adaptive PF-ODE solve behind ``bpd``
  (Lipman et al. 2023 count NFE of the dopri5 solver);
* ``guidance_scale`` — the guidance scale w a guided sampler was evaluated at (the evaluation's
  ``sample_options`` value ``guidance``; :mod:`baselines.guidance`): a setting, not a measurement;
* ``train_wall_time_s`` — wall time of training the row's model (0 for an untrained model);
  ``train_step_ms`` — that wall time per training step, in milliseconds (what one step of the
  row's objective costs, data batching and checkpoints included);
* ``<bits/dim key>_<kind>`` for ``bpd``, ``elbo_bpd``, ``iwae_bpd`` and the kinds ``continuous``
  (real-valued rows scored as they are: a differential entropy, can be negative), ``dequantized``
  (8-bit pixels uniformly dequantized: a density on [0, 256)^D in bits/dim), ``binarized``
  (pixels thresholded to {0, 1}: a probability mass) and ``discrete`` (pixels as K grey levels,
  K = 3..256: a probability mass over K^D states, at most log2 K bits/dim) — the value only when the
  record's kind is that one. The four are different quantities: a table never puts two kinds in
  one column (a plain bits/dim column whose rows differ in kind is refused by
  :func:`bpd_kind_conflicts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "Column", "bpd_kind", "bpd_kind_conflicts", "column_blocks", "column_value"]


@dataclass(frozen=True)
class Column:
    """How to show a column: header label, unit, which direction is better (None: neither), the
    range its values live in (``MetricKey.bounds``), which its intervals respect, and whether it is
    a cost of running the model (a timing or a size: ``cost``), which training does not move
    towards a value, so the convergence check skips it."""

    key: str
    label: str
    higher_is_better: bool | None
    unit: str = ""
    bounds: tuple[float, float] | None = None
    cost: bool = False


DERIVED: tuple[tuple[Column, str | None], ...] = (
    (Column("bpd_nll_nats", "NLL (exact/ODE)", False, "nats"), "iwae_bpd"),
    (Column("elbo_nll_nats", "−ELBO", False, "nats"), "iwae_bpd"),
    (Column("iwae_nll_nats", "−L_k (IWAE bound)", False, "nats"), "iwae_bpd"),
    (Column("kl_nats", "KL", None, "nats"), "iwae_bpd"),
    (Column("kl_per_dim", "KL per dim", None, "nats"), "iwae_bpd"),
    (Column("recon_nats", "recon.", False, "nats"), "iwae_bpd"),
    (Column("bpd_nfe", "NFE of the bpd ODE solve", False, bounds=(0.0, math.inf)), "nfe_mean"),
    (Column("guidance_scale", "guidance w", None, bounds=(0.0, math.inf)), "nfe_mean"),
    (Column("parameters", "params", None, bounds=(0.0, math.inf), cost=True), None),
    (Column("train_wall_time_s", "train time", None, "s", bounds=(0.0, math.inf), cost=True), None),
    (Column("train_step_ms", "train step", None, "ms", bounds=(0.0, math.inf), cost=True), None),
)
"""Columns computed from fields a record already holds (see the module docstring), each shown
after the metric key named beside it (None: at the end)."""

_UNIT_SHOWN = frozenset({"bits/dim", "nats", "s"})

BPD_KEYS = ("bpd", "elbo_bpd", "iwae_bpd")
BPD_KINDS = {"continuous": "continuous", "dequantized": "8-bit dequantized", "binarized": "binarized",
             "discrete": "discrete grey levels"}


def _kind_column(key: str) -> tuple[str, str] | None:
    """(bits/dim key, kind) of a ``<bits/dim key>_<kind>`` column such as ``bpd_binarized``, else None."""
    stem, _, kind = key.rpartition("_")
    return (stem, kind) if stem in BPD_KEYS and kind in BPD_KINDS else None


def bpd_kind(entry: dict[str, Any]) -> str | None:
    """The kind of a bits/dim entry from its ``dequantization`` field (None: not recorded)."""
    how = str(entry.get("dequantization") or "")
    if "binarized" in how:
        return "binarized"
    if how.startswith("uniform"):
        return "dequantized"
    if "continuous" in how:
        return "continuous"
    if "grey levels" in how or "integer levels" in how:
        return "discrete"
    return None


def _columns() -> dict[str, Column]:
    """One column per key of every registered metric (its ``MetricKey`` label, direction and unit),
    in registry order, with the derived columns placed after their metric key."""
    from metrics import all_metrics

    after: dict[str | None, list[Column]] = {}
    for column, anchor in DERIVED:
        after.setdefault(anchor, []).append(column)
    out: dict[str, Column] = {}
    for metric in all_metrics():
        for k in metric.keys:
            out[k.key] = Column(k.key, k.label, k.higher_is_better, k.unit if k.unit in _UNIT_SHOWN else "", k.bounds,
                                cost=k.gate_reason == "timing")
            out.update({c.key: c for c in after.get(k.key, ())})
    out.update({c.key: c for c in after.get(None, ())})
    for key in BPD_KEYS:
        base = out[key]
        for kind, words in BPD_KINDS.items():
            out[f"{key}_{kind}"] = Column(f"{key}_{kind}", f"{base.label}, {words}", base.higher_is_better, base.unit)
    return out


COLUMNS: dict[str, Column] = _columns()


_NLL_OF = {"bpd_nll_nats": "bpd", "elbo_nll_nats": "elbo_bpd", "iwae_nll_nats": "iwae_bpd"}


def column_blocks(record: dict[str, Any], key: str) -> tuple[list[float], int, str] | None:
    """(block means over the evaluation examples, how many examples, which examples) of a
    likelihood-type column, or None."""
    base = _NLL_OF.get(key, key)
    split = _kind_column(base)
    if split is not None:
        if column_value(record, key) is None:
            return None
        base = split[0]
    entry = record.get("metrics", {}).get(base)
    if not isinstance(entry, dict) or not entry.get("block_means") or not isinstance(entry.get("n"), int):
        return None
    scale = _nats_per_bpd(record) if key in _NLL_OF else 1.0
    data = record.get("data", {}).get("dataset", {})
    which = f"{data.get('content_hash')}:{sorted(data.get('selection', {}).items())}:{entry['n']}"
    return [b * scale for b in entry["block_means"]], entry["n"], which


def _metric(record: dict[str, Any], key: str) -> tuple[float, float | None] | None:
    entry = record.get("metrics", {}).get(key)
    if not isinstance(entry, dict) or entry.get("value") is None:
        return None
    se = entry.get("stderr")
    if se is None and isinstance(entry.get("uncertainty"), dict):
        se = entry["uncertainty"].get("std")
    return float(entry["value"]), (None if se is None else float(se))


def _nats_per_bpd(record: dict[str, Any]) -> float:
    """Nats per example in one bit per dim: D · ln 2, D the record's per-example dimension."""
    return math.prod(record["data"]["dataset"]["shape"][1:]) * math.log(2.0)


def column_value(record: dict[str, Any], key: str) -> tuple[float, float | None] | None:
    """(value, standard error or None) of column ``key`` in ``record``; None when it has no such value."""
    if key == "parameters":
        p = record.get("model", {}).get("parameters")
        return None if p is None else (float(p), None)
    if key == "guidance_scale":
        w = dict(record.get("config", {}).get("sample_options") or ()).get("guidance")
        return None if w is None else (float(w), None)
    if key == "train_wall_time_s":
        t = record.get("leaderboard", {}).get("train", {}).get("wall_time_s")
        return None if t is None else (float(t), None)
    if key == "train_step_ms":
        train = record.get("leaderboard", {}).get("train", {})
        t, steps = train.get("wall_time_s"), train.get("steps")
        return None if t is None or not steps else (1000.0 * float(t) / int(steps), None)
    if key == "bpd_nfe":
        entry = record.get("metrics", {}).get("bpd", {})
        return None if entry.get("nfe_mean") is None else (float(entry["nfe_mean"]), None)
    split = _kind_column(key)
    if split is not None:
        base_key, kind = split
        entry = record.get("metrics", {}).get(base_key)
        return _metric(record, base_key) if isinstance(entry, dict) and bpd_kind(entry) == kind else None
    if key in _NLL_OF:
        base = _metric(record, _NLL_OF[key])
        if base is None:
            return None
        scale = _nats_per_bpd(record)
        return base[0] * scale, None if base[1] is None else base[1] * scale
    if key in ("kl_nats", "kl_per_dim", "recon_nats"):
        entry = record.get("metrics", {}).get("kl_active_dims")
        if not isinstance(entry, dict) or "kl_per_dim" not in entry:
            return None
        kl = math.fsum(entry["kl_per_dim"])
        if key == "kl_nats":
            return kl, None
        if key == "kl_per_dim":
            return kl / len(entry["kl_per_dim"]), None
        neg_elbo = column_value(record, "elbo_nll_nats")
        return None if neg_elbo is None else (neg_elbo[0] - kl, None)
    return _metric(record, key)


def bpd_kind_conflicts(column: str, records: dict[str, list[dict[str, Any]]]) -> dict[str, str] | None:
    """{row: kind} when the rows of a plain bits/dim ``column`` hold more than one kind, else None."""
    if column not in BPD_KEYS:
        return None
    kinds = {}
    for row, recs in records.items():
        entry = recs[0].get("metrics", {}).get(column) if recs else None
        if isinstance(entry, dict) and entry.get("value") is not None:
            kinds[row] = bpd_kind(entry) or "unrecorded"
    return kinds if len(set(kinds.values())) > 1 else None
