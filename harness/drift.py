"""Drift checks: is a candidate run's metric within its statistical uncertainty of the baseline's?

Used by ``genbench check`` and by the pytest plugin (``harness.pytest_plugin``); rendering of the
result is in ``harness.drift_report``.

Which fields make two records comparable
----------------------------------------
Every field of a record falls in one of four classes:

* **protocol** — how a number is measured. Any difference refuses the comparison with a
  :class:`ProtocolMismatch` naming every differing field (exit status 2): the record ``kind``; every
  ``config`` option except those listed below (sample counts, KID subsets and subset size, IS
  splits, k of the k-NN metrics, rounding, IWAE k, ODE divergence / probes / solver / rtol / atol /
  steps, and any option added later: unknown options are protocol, to stay strict; an option one
  record lacks, written before it existed, counts as its default value); the feature
  extractor's protocol (name, weights sha256, resize, dimension, ...); the *reference* data
  (``data.reference`` of eval-samples, ``data.dataset`` of eval: content hash, kind, shape, dtype,
  rows selected); and per metric every field except its measured outputs (value, uncertainty,
  standard error, counts, per-unit lists, NFE tallies, timings).
* **seed** — ``config.seed`` and the per-metric ``seed``. Protocol by default: a CI rerun at fixed
  seeds is compared with a rerun at the *same* seeds. With ``across_seeds=True`` the seed becomes
  a nuisance the tolerances already account for: seeds may differ, and for *registered* data sets
  (generated from the seed, e.g. ``moons-train``) the seed-dependent content hash and selection
  rule are replaced by the name and row counts. Data read from files keeps its content hash.
* **tested** — what a check exists to detect, so a difference is compared, never refused: the
  model (checkpoint and its sha256, entry point, registry name, model args), the generated samples
  of eval-samples (``data.samples``), and the sampler and its steps (``config.sampler`` /
  ``config.steps``, the ``sampling`` section, the ``nfe_mean`` entry). Changing a sampler's steps
  must fail the check *naming* NFE and the sample metrics it moved, not be refused as a mismatch.
* **context** — the ``run`` section (git sha, library versions, device, host, wall time, argv),
  batch sizes, cache use, file paths, where the extractor weights were found, the bootstrap count:
  never a mismatch; differences are shown in the report header. Config options resolved elsewhere
  (``feature_extractor``, ``resize``, ``reference``, ``dataset``) are compared in their resolved
  form (the ``features`` and ``data`` sections).

Tolerances and verdicts
-----------------------
Each metric passes when |Δ| ≤ tolerance, Δ = candidate − baseline. The tolerance guards against a
false alarm whose probability is at most ``family_alpha`` (1%) per record: q is the two-sided
1 − α/m quantile over the m statistically-toleranced metrics of the record (Bonferroni, valid under
any correlation between them) of a Student t whose degrees of freedom carry the Monte-Carlo error of
the spread. Two rules, named per metric in the report (``basis``):

* **unpaired** (``--across-seeds``, or a record without replicates, e.g. older baselines): the
  spreads s_b, s_c of each run (the half-sample spread of ``harness.core.stats``, or the
  ``stderr`` of bits/dim) give |Δ| ≤ q·sqrt(s_b² + s_c²) + 1e-9·max(1, |baseline|), with
  Welch-Satterthwaite df (Welch 1947; Satterthwaite 1946) from B − 1 per side for B half-samples,
  n − 1 for a standard error over n examples. With B = 10 (df ≈ 18) and m = 6, q ≈ 3.7 (3.1 for
  known spreads).
* **paired** (seeds equal, the default, and both records hold replicates made the same way): at
  equal seeds both runs draw the same latents, data rows, dequantization noise and half-sample
  rows, so the sampling noise that a seed change would bring is shared and cancels in Δ. The
  spread is that of Δ itself: for a sample metric, the standard deviation of the B differences
  c_r − b_r of the two runs' half-sample replicates (same rows, ``uncertainty.replicates``) times
  the same delete-d jackknife factor sqrt(m/(n − m)) (``uncertainty.scale``), df = B − 1; for
  bits/dim, the batch-means standard error of the K = 20 differences D_j of the block means
  (``block_means``, ``harness.core.stats.block_means``): sqrt(Σ n_j (D_j − Δ)² / ((K − 1) n)), df = K − 1.
  Tolerance q·s_paired + max(0.05·s_unpaired, one count) + 1e-9·max(1, |baseline|). The paired
  spread shrinks with the change itself (a bias shift ε moves Δ and its spread both ∝ ε), so some
  floor is needed or a numerically irrelevant change would fail as often as a real one: changes
  under 5% of the seed-to-seed standard error (``MIN_EFFECT``) always pass, as does a k-NN fraction
  (precision, recall, coverage; density) moving by one sample (1/n, 1/(k·n)), which half-samples
  cannot see. An unchanged rerun gives Δ = 0 and every paired spread 0: it passes exactly.

Measurements: docs/drift.md (false-alarm rates, sensitivity of the paired and unpaired rules, the
calibration on a null change, and the commands that produced them).

NFE and deterministic counts (``active_units``, ``kl_active_dims``) and any metric recorded without
a spread must match exactly (when only one side has a spread, it serves both, unpaired).
``samples_per_s`` (timing) and the dispersion entries ``kid_std`` / ``is_std`` are reported but
not gated. A user file overrides per metric:
``{"fid": {"abs": 0.5}}``, ``{"rel": 0.01}`` (of |baseline|) or ``{"z": 3}`` (multiples of the
spread of Δ, paired or unpaired as above, no Bonferroni).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.metric import ENTRY_MEASURED
from harness.core.stats import paired_block_stderr
from harness.store.records import read_record, validate_record

__all__ = [
    "CheckOptions", "CheckReport", "FieldDifference", "MetricResult", "Override", "ProtocolMismatch",
    "RecordComparison", "check", "compare_records", "pair_records", "protocol_differences",
]

FAMILY_ALPHA = 0.01
MIN_EFFECT = 0.05  # paired rule: changes below this many unpaired (seed-to-seed) standard errors always pass
ABSENT = "<absent>"  # a field one record has and the other lacks


def _key_info(key: str) -> Any:
    """The registered ``MetricKey`` of record key ``key``, or None for a key no metric declares."""
    from metrics import metric_keys

    found = metric_keys().get(key)
    return None if found is None else found[1]


def _ungated(key: str) -> str | None:
    """Why ``key`` is reported but not gated (its ``MetricKey.gate`` is ``"none"``), or None."""
    info = _key_info(key)
    if info is None or info.gate != "none":
        return None
    return info.gate_reason or "not gated"


_CONFIG_NOT_PROTOCOL = frozenset({
    # tested
    "samples", "checkpoint", "entry", "model", "model_args", "sampler", "steps",
    # context
    "device", "batch_size", "use_cache", "inception_weights", "metrics", "bootstrap", "replicates", "allow_fewer_reference",
    # compared in resolved form (features / data sections)
    "feature_extractor", "resize", "reference", "dataset",
})
_CONFIG_NESTED_CONTEXT = frozenset({"model_metrics.importance_chunk"})  # memory, not protocol
_FEATURES_CONTEXT = frozenset({"training.command", "weights_file", "weights_path", "weights_source", "channels", "resized_from", "device",
                               "versions"})
_DATA_CONTEXT = frozenset({"spec", "source", "name", "features_cached"})
_RUN_NOISE = frozenset({"id", "created_utc", "wall_time_s", "argv"})


class ProtocolMismatch(ValueError):
    """Two records were measured differently; the message names every differing field."""


@dataclass(frozen=True)
class FieldDifference:
    """A record field (dotted path) whose value differs between baseline and candidate."""

    path: str
    baseline: Any
    candidate: Any


@dataclass(frozen=True)
class Override:
    """A user tolerance for one metric: ``abs`` (absolute), ``rel`` (of |baseline|) or ``z`` (spreads)."""

    kind: str
    amount: float


@dataclass(frozen=True)
class CheckOptions:
    """How to compare: family-wise false-alarm rate per record, seed handling, per-metric overrides."""

    family_alpha: float = FAMILY_ALPHA
    across_seeds: bool = False
    overrides: Mapping[str, Override] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.family_alpha < 1.0:
            raise ValueError(f"family_alpha must be in (0, 1), got {self.family_alpha}")


@dataclass(frozen=True)
class MetricResult:
    """One row of the report. ``verdict`` is ``pass``, ``drift``, ``missing`` or ``info`` (not gated);
    ``basis`` is ``paired`` or ``unpaired`` for a statistical tolerance (which spread it used), else None."""

    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    tolerance: float | None
    verdict: str
    rule: str
    basis: str | None = None

    @property
    def failed(self) -> bool:
        return self.verdict in ("drift", "missing")


@dataclass(frozen=True)
class RecordComparison:
    """The comparison of one baseline/candidate pair; ``problem`` is set when one side is absent."""

    name: str
    baseline: str | None
    candidate: str | None
    metrics: tuple[MetricResult, ...] = ()
    context: tuple[FieldDifference, ...] = ()
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and not any(m.failed for m in self.metrics)


@dataclass(frozen=True)
class CheckReport:
    """Every comparison of a check, with the options it ran under."""

    comparisons: tuple[RecordComparison, ...]
    options: CheckOptions

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def _protocol_view(record: dict[str, Any], metric_keys: set[str], *, across_seeds: bool) -> dict[str, Any]:
    """The protocol fields of ``record`` as ``{dotted path: value}`` (see the module docstring)."""
    view: dict[str, Any] = {"kind": record.get("kind")}
    not_seed = frozenset({"seed"}) if across_seeds else frozenset()
    config = record.get("config") or {}
    flat_config = _flatten({k: v for k, v in config.items() if k not in _CONFIG_NOT_PROTOCOL | not_seed}, "config")
    view.update({k: v for k, v in flat_config.items() if k[len("config."):] not in _CONFIG_NESTED_CONTEXT})
    features = _flatten(record.get("features") or {}, "features")
    view.update({k: v for k, v in features.items()
                 if k.split(".")[1] not in _FEATURES_CONTEXT and k[len("features."):] not in _FEATURES_CONTEXT})
    for role, data in (record.get("data") or {}).items():
        if role == "samples" or not isinstance(data, dict):
            continue
        fields = {k: v for k, v in data.items() if k not in _DATA_CONTEXT}
        if across_seeds and _is_registered(data.get("spec")):
            fields.pop("content_hash", None)
            fields["name"] = data.get("name")
            fields["selection"] = {k: v for k, v in (data.get("selection") or {}).items() if k != "rule"}
        view.update(_flatten(fields, f"data.{role}"))
    for key in metric_keys:
        entry = record["metrics"][key]
        info = _key_info(key)
        fields = info.protocol_fields(entry) if info is not None else {k: v for k, v in entry.items() if k not in ENTRY_MEASURED}
        view.update(_flatten({k: v for k, v in fields.items() if k not in not_seed}, f"metrics.{key}"))
    return view


def _is_registered(spec: Any) -> bool:
    from harness.datasets import DATASETS

    return isinstance(spec, str) and spec in DATASETS


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[FieldDifference]:
    return [FieldDifference(p, a.get(p, ABSENT), b.get(p, ABSENT)) for p in sorted(set(a) | set(b))
            if a.get(p, ABSENT) != b.get(p, ABSENT)]


def protocol_differences(baseline: dict[str, Any], candidate: dict[str, Any], *,
                         across_seeds: bool = False) -> list[FieldDifference]:
    """Protocol fields that differ between two records (over the metrics both have).

    A config option absent from one record (written before the option existed) and at its default
    in the other is no difference: an option is added with the default that keeps the old behaviour.
    """
    shared = set(baseline["metrics"]) & set(candidate["metrics"])
    diffs = _diff(_protocol_view(baseline, shared, across_seeds=across_seeds),
                  _protocol_view(candidate, shared, across_seeds=across_seeds))
    defaults = _config_defaults(baseline.get("kind")) if any(ABSENT in (d.baseline, d.candidate) for d in diffs) else {}
    return [d for d in diffs if not (d.path.startswith("config.") and ABSENT in (d.baseline, d.candidate)
                                     and d.path[len("config."):] in defaults
                                     and defaults[d.path[len("config."):]] in (d.baseline, d.candidate))]


def _config_defaults(kind: Any) -> dict[str, Any]:
    """Default config option values of a record kind, as they read back from JSON."""
    import dataclasses

    if kind == "eval":
        from harness.runner import ModelEvalConfig as config_class
    elif kind == "eval-samples":
        from harness.eval_samples import SampleEvalConfig as config_class
    else:
        return {}
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = json.loads(json.dumps(f.default))
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            sub = json.loads(json.dumps(dataclasses.asdict(f.default_factory())))
            defaults.update({f"{f.name}.{k}": v for k, v in sub.items()})
    return defaults


def context_differences(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[FieldDifference]:
    """Run context and tested fields that differ: shown in the report, never a mismatch."""
    def view(record: dict[str, Any]) -> dict[str, Any]:
        config = record.get("config") or {}
        out = _flatten({k: v for k, v in (record.get("run") or {}).items() if k not in _RUN_NOISE}, "run")
        out.update(_flatten({k: config.get(k) for k in ("seed", "sampler", "steps", "checkpoint", "entry",
                                                         "model", "model_args") if k in config}, "config"))
        out.update(_flatten(record.get("model") or {}, "model"))
        samples = (record.get("data") or {}).get("samples")
        if isinstance(samples, dict):
            out["data.samples.content_hash"] = samples.get("content_hash")
        return out

    return _diff(view(baseline), view(candidate))


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} is {value!r}, not a number")
    return float(value)


def _spread(entry: dict[str, Any], where: str) -> tuple[float, float] | None:
    """(standard error, degrees of freedom) recorded for a metric entry, or None."""
    unc = entry.get("uncertainty")
    if isinstance(unc, dict):
        std, boot = _number(unc.get("std"), f"{where}.uncertainty.std"), unc.get("num_replicates")
        if std is None or std < 0 or not isinstance(boot, int) or boot < 2:
            raise ValueError(f"{where}.uncertainty must have std >= 0 and num_replicates >= 2, got {unc}")
        return std, float(boot - 1)
    if unc is not None:
        raise ValueError(f"{where}.uncertainty must be an object, got {unc!r}")
    stderr = _number(entry.get("stderr"), f"{where}.stderr")
    if stderr is None or not math.isfinite(stderr):
        return None
    n = entry.get("n")
    return stderr, float(n - 1) if isinstance(n, int) and n > 1 else math.inf


def _numbers(value: Any, length: int, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{where} must be a list of {length} numbers, got {_short(value)}")
    out = [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if any(v is None or not math.isfinite(v) for v in out):
        raise ValueError(f"{where} must hold finite numbers, got {_short(value)}")
    return out  # type: ignore[return-value]


def _paired_spread(b: dict[str, Any], c: dict[str, Any], where_b: str, where_c: str) -> tuple[float, float] | None:
    """(standard error, df) of Δ = c − b from the paired replicates of two runs at equal seeds, or None.

    Sample metrics: the B half-sample replicates of both runs, on the same row subsets (same seed,
    sizes, B and method): std of c_r − b_r times the recorded half-sampling factor, df B − 1.
    Bits/dim: the K block means over the same n examples: sqrt(Σ n_j (D_j − Δ)² / ((K − 1) n)), df K − 1.
    None when either side lacks them or they were made differently (then the unpaired rule applies).
    """
    ub, uc = b.get("uncertainty"), c.get("uncertainty")
    if isinstance(ub, dict) and isinstance(uc, dict):
        if "replicates" not in ub or "replicates" not in uc:
            return None
        if any(ub.get(k) != uc.get(k) for k in ("num_replicates", "method", "seed", "scale")):
            return None
        boot = int(ub["num_replicates"])
        rb = _numbers(ub["replicates"], boot, f"{where_b}.uncertainty.replicates")
        rc = _numbers(uc["replicates"], boot, f"{where_c}.uncertainty.replicates")
        scale = _number(ub.get("scale"), f"{where_b}.uncertainty.scale")
        if scale is None or not scale > 0:
            raise ValueError(f"{where_b}.uncertainty.scale must be > 0, got {ub.get('scale')!r}")
        d = [y - x for x, y in zip(rb, rc)]
        mean = sum(d) / boot
        return math.sqrt(sum((x - mean) ** 2 for x in d) / (boot - 1)) * scale, float(boot - 1)
    if "block_means" not in b or "block_means" not in c:
        return None
    n, blocks = b.get("n"), b["block_means"]
    if not isinstance(n, int) or n != c.get("n") or not isinstance(blocks, list) or not 2 <= len(blocks) <= n:
        return None
    k = len(blocks)
    if not isinstance(c["block_means"], list) or len(c["block_means"]) != k:
        return None
    mb = _numbers(blocks, k, f"{where_b}.block_means")
    mc = _numbers(c["block_means"], k, f"{where_c}.block_means")
    return paired_block_stderr(mb, mc, n)


def _one_count(key: str, entry: dict[str, Any]) -> float:
    """The smallest step of the value (``MetricKey.resolution``: one sample of a k-NN fraction); else 0."""
    info = _key_info(key)
    return 0.0 if info is None or info.resolution is None else float(info.resolution(entry))


def _combine(b: tuple[float, float] | None, c: tuple[float, float] | None) -> tuple[float, float] | None:
    """Combined spread sqrt(s_b² + s_c²) and Welch-Satterthwaite df; a missing side borrows the other's."""
    b, c = b or c, c or b
    if b is None or c is None:
        return None
    var = b[0] ** 2 + c[0] ** 2
    if var == 0.0:
        return 0.0, math.inf
    denom = sum(s**4 / df for s, df in (b, c) if math.isfinite(df))
    return math.sqrt(var), (var**2 / denom if denom > 0 else math.inf)


def _quantile(prob: float, df: float) -> float:
    from scipy import stats  # imported on use: every genbench command imports this module

    return float(stats.norm.ppf(prob) if math.isinf(df) else stats.t.ppf(prob, df))


def compare_records(name: str, baseline: dict[str, Any], candidate: dict[str, Any], options: CheckOptions,
                    *, paths: tuple[str | None, str | None] = (None, None)) -> RecordComparison:
    """Verdict per metric for one record pair; raises :class:`ProtocolMismatch` if not comparable."""
    diffs = protocol_differences(baseline, candidate, across_seeds=options.across_seeds)
    if diffs:
        raise ProtocolMismatch(mismatch_message(name, diffs, across_seeds=options.across_seeds))
    where_b, where_c = f"{paths[0] or 'baseline'}: metrics", f"{paths[1] or 'candidate'}: metrics"
    keys = list(baseline["metrics"]) + [k for k in candidate["metrics"] if k not in baseline["metrics"]]
    plans: dict[str, _Plan] = {}
    for key in keys:
        if key in baseline["metrics"] and key in candidate["metrics"]:
            b, c = baseline["metrics"][key], candidate["metrics"][key]
            unpaired = _combine(_spread(b, f"{where_b}.{key}"), _spread(c, f"{where_c}.{key}"))
            paired = (None if options.across_seeds or unpaired is None
                      else _paired_spread(b, c, f"{where_b}.{key}", f"{where_c}.{key}"))
            plans[key] = _Plan(_number(b["value"], f"{where_b}.{key}.value"), _number(c["value"], f"{where_c}.{key}.value"),
                               paired or unpaired, unpaired, None if unpaired is None else
                               "paired" if paired else "unpaired", _one_count(key, b))
    family = [k for k, p in plans.items()
              if k not in options.overrides and _ungated(k) is None and p.spread is not None and p.spread[0] > 0]
    rows = []
    for key in keys:
        if key not in plans:
            side, present, absent, where = (("candidate", baseline, candidate, where_b) if key in baseline["metrics"]
                                            else ("baseline", candidate, baseline, where_c))
            value = _number(present["metrics"][key]["value"], f"{where}.{key}.value")
            reason = _skip_reason(absent, key)
            rows.append(MetricResult(key, value if side == "candidate" else None, value if side == "baseline" else None,
                                     None, None, "missing", f"absent from the {side}" + (f" ({reason})" if reason else "")))
            continue
        rows.append(_verdict(key, plans[key], options, len(family)))
    return RecordComparison(name=name, baseline=paths[0], candidate=paths[1], metrics=tuple(rows),
                            context=tuple(context_differences(baseline, candidate)))


def _skip_reason(record: dict[str, Any], key: str) -> str | None:
    """Why ``record`` skipped the metric that writes ``key``, if it says."""
    from metrics import METRICS

    skipped = record.get("skipped") or {}
    owners = [name for name in METRICS.names() if key in METRICS.get(name).key_names]
    return next((str(skipped[n]) for n in (key, *owners) if n in skipped), None)


@dataclass(frozen=True)
class _Plan:
    """Values of one metric, the spread of Δ its tolerance uses, the unpaired spread, and which it is."""

    b: float | None
    c: float | None
    spread: tuple[float, float] | None
    unpaired: tuple[float, float] | None
    basis: str | None
    one_count: float = 0.0


def _verdict(key: str, plan: _Plan, options: CheckOptions, family_size: int) -> MetricResult:
    b, c, spread, basis = plan.b, plan.c, plan.spread, plan.basis
    if b is None or c is None:
        same = b is None and c is None
        return MetricResult(key, b, c, None, None, "pass" if same else "drift", "value missing (NaN) on a side")
    delta = c - b
    floor = 1e-9 * max(1.0, abs(b))
    override = options.overrides.get(key)
    if override is not None and override.kind != "z":
        tol = override.amount * (abs(b) if override.kind == "rel" else 1.0) + floor
        rule, basis = f"user {override.kind} {override.amount:g}", None
    elif override is not None:
        s = spread[0] if spread else 0.0
        tol, rule = override.amount * s + floor, f"user z={override.amount:g} x {s:.3g}" + (f" ({basis})" if basis else "")
    elif _ungated(key) is not None:
        return MetricResult(key, b, c, delta, None, "info", f"not gated ({_ungated(key)})", basis)
    elif spread is None and options.across_seeds and getattr(_key_info(key), "seed_dependent", False):
        return MetricResult(key, b, c, delta, None, "info",
                            "not gated across seeds (a count that depends on the evaluation seed; give it a "
                            "tolerance with --tolerances to gate it)", None)
    elif spread is None:
        tol, rule, basis = floor, "exact", None
    elif basis == "paired":
        # The paired spread shrinks with the change: a least relevant effect keeps tiny changes passing
        # (MIN_EFFECT unpaired standard errors, at least one count of a k-NN fraction).
        s, df = spread
        unpaired = plan.unpaired[0] if plan.unpaired else 0.0
        least = max(MIN_EFFECT * unpaired, plan.one_count)
        q = _quantile(1.0 - options.family_alpha / (2 * family_size), df) if s > 0 else 0.0
        tol = q * s + least + floor
        rule = ((f"paired {q:.2f} x {s:.3g} (t, df {df:.0f}; alpha {options.family_alpha:g} over {family_size})"
                 if s > 0 else "paired, zero spread of the differences")
                + (f" + one count {least:.3g}" if least == plan.one_count > 0 else f" + {MIN_EFFECT:g} x {unpaired:.3g}"))
    elif spread[0] == 0.0:
        tol, rule, basis = floor, "exact (zero spread recorded)", None
    else:
        s, df = spread
        q = _quantile(1.0 - options.family_alpha / (2 * family_size), df)
        tol = q * s + floor
        rule = f"unpaired {q:.2f} x {s:.3g} (t, df {df:.0f}; alpha {options.family_alpha:g} over {family_size})"
    return MetricResult(key, b, c, delta, tol, "pass" if abs(delta) <= tol else "drift", rule, basis)


def mismatch_message(name: str, diffs: list[FieldDifference], *, across_seeds: bool) -> str:
    """One message naming every differing protocol field; metric fields grouped by field name."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for d in diffs:
        parts = d.path.split(".")
        if parts[0] == "metrics":
            path, metric = f"metrics.*.{'.'.join(parts[2:])}", parts[1]
        else:
            path, metric = d.path, ""
        grouped.setdefault((path, _short(d.baseline), _short(d.candidate)), []).append(metric)
    lines = [f"{path}: {b} (baseline) vs {c} (candidate)" + (f" in {', '.join(m)}" if any(m) else "")
             for (path, b, c), m in grouped.items()]
    seeds_only = all(d.path.split(".")[-1] in ("seed", "content_hash", "rule") for d in diffs)
    hint = "\n  (to compare runs that differ only in seeds, use --across-seeds)" if seeds_only and not across_seeds else ""
    return (f"{name}: protocol mismatch, refusing to compare (fields differ: "
            f"{', '.join(sorted({p for p, _, _ in grouped}))}):\n  " + "\n  ".join(lines) + hint)


def _short(value: Any) -> str:
    text = value if value == ABSENT else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def pair_records(baseline: str | Path, candidate: str | Path) -> list[tuple[str, Path | None, Path | None]]:
    """Pair two record files, or the ``*.json`` records of two folders, recursively, by relative path.

    A record that one folder has and the other lacks (at any depth) is paired with None, which
    :func:`check` reports as a failure: a check never passes on what it did not compare.
    """
    b, c = Path(baseline), Path(candidate)
    for p in (b, c):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    if b.is_file() and c.is_file():
        return [(c.name if c.name == b.name else f"{b.name} vs {c.name}", b, c)]
    if not (b.is_dir() and c.is_dir()):
        raise ValueError(f"--baseline and --candidate must both be record files or both folders; got {b} and {c}")

    def records(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*.json") if p.is_file()}

    names = records(b) | records(c)
    if not names:
        raise ValueError(f"no *.json records in {b} or {c} (searched their subfolders too)")
    return [(n, b / n if (b / n).is_file() else None, c / n if (c / n).is_file() else None) for n in sorted(names)]


def check(pairs: list[tuple[str, Any, Any]], options: CheckOptions) -> CheckReport:
    """Compare every pair; each side is a record dict, a path, or None (absent).

    Raises:
        ValueError: a malformed record (the message names the file and the problem).
        ProtocolMismatch: some pair is not comparable; the message covers every such pair.
    """
    comparisons, mismatches = [], []
    for name, b, c in pairs:
        if b is None or c is None:
            side = "baseline" if b is None else "candidate"
            comparisons.append(RecordComparison(name, _label(b), _label(c), problem=f"no {side} record"))
            continue
        try:
            comparisons.append(compare_records(name, _load(b), _load(c), options, paths=(_label(b), _label(c))))
        except ProtocolMismatch as err:
            mismatches.append(str(err))
    if mismatches:
        raise ProtocolMismatch("\n".join(mismatches))
    return CheckReport(comparisons=tuple(comparisons), options=options)


def _load(side: Any) -> dict[str, Any]:
    """A record from a path (read and validated), or an in-memory record as it would read back from JSON."""
    if isinstance(side, dict):
        validate_record(side)
        return json.loads(json.dumps(side))  # tuples become lists, as in a written record
    return read_record(side)


def _label(side: Any) -> str | None:
    return None if side is None else "(this run)" if isinstance(side, dict) else str(side)
