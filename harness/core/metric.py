"""The Metric object: everything the pipeline knows about one metric, declared in the metric's file.

Each file of ``metrics/`` that defines a metric ends with ``METRIC = Metric(...)``, and the
``METRICS`` registry (``metrics/__init__.py``) lists those files. The planner, ``eval-samples``,
``eval``, the half-sample replicates, ``genbench check`` and the leaderboard columns read only these
objects; none of them names a metric.

A metric declares:

* the record keys it writes (:class:`MetricKey`: unit, direction, how a drift check gates it, which
  entry fields are measured outputs rather than protocol);
* what it needs (:data:`NEEDS`): features of an extractor, class logits, the generated rows, the
  reference set's mixture components, or a model capability;
* ``min_samples`` per set, the option names it reads (its protocol settings), its uncertainty
  method, and ``compute(inputs, options) -> {key: MetricEntry}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

Gate = Literal["statistical", "exact", "none"]
Uncertainty = Literal["half-sample", "per-example", "exact", "none"]
ReferenceUse = Literal["rows", "statistics", "none"]

NEEDS: dict[str, str] = {
    "features": "features of both sets from one feature extractor",
    "logits": "class logits of the generated set (an extractor with a classifier head)",
    "samples": "the generated rows themselves (tabular data)",
    "mixture": "a reference set with known mixture components (DatasetMeta.mixture)",
    "density": "a reference set whose exact log density is known (DatasetMeta.log_density)",
    "train": "features of the model's training set (eval-samples --train)",
    "labels": "the class each generated row was requested as (a class-conditional model records it)",
    "real_labels": "the class of each reference row (a labelled data set)",
    "model:Sampler": "a model implementing Sampler",
    "model:LogLikelihood": "a model implementing LogLikelihood (an exact log_prob)",
    "model:LogLikelihood|ProbabilityFlow": "a model implementing LogLikelihood or ProbabilityFlow",
    "model:LowerBound": "a model implementing LowerBound",
    "model:LowerBound+importance": "a model whose LowerBound has an importance-weighted form "
                                   "(supports_importance_sampling is not False)",
    "model:Encoder": "a model implementing Encoder",
    "model:FlowTrajectory": "a flow implementing FlowTrajectory (trajectory(z0, steps=N))",
    "model:Reconstructor": "a model implementing Reconstructor (reconstruct(x), an autoencoder)",
    "model:Score": "a model implementing Score (score(x) of a noise-smoothed density, score_noise_std)",
}
"""Every need a metric may declare, with the words the planner uses when it is missing."""

SAMPLE_NEEDS = frozenset({"features", "logits", "samples", "mixture", "density", "train", "labels", "real_labels"})
"""Needs met by two sample sets alone (``genbench eval-samples``)."""

ENTRY_MEASURED = frozenset({"value", "value_reason", "uncertainty", "stderr", "block_means"})
"""Entry fields every metric writes as measured outputs (never protocol)."""


@dataclass(frozen=True)
class MetricKey:
    """One number a metric writes into a record's ``metrics`` map.

    Attributes:
        key: the record key (snake_case, unit in the name where it has one: ``elbo_bpd``).
        label: column header of a leaderboard table.
        unit: unit of the value (``"bits/dim"``, ``"nats"``, ``""`` for a pure number).
        higher_is_better: the direction of "better"; None for neither (a spread, a count).
        gate: how ``genbench check`` treats it: ``"statistical"`` (a tolerance from the recorded
            spread), ``"exact"`` (must match: counts, NFE) or ``"none"`` (reported, not gated).
        gate_reason: for ``gate="none"``, why (shown in the report).
        measured: entry fields, besides :data:`ENTRY_MEASURED`, that are outputs of the measurement
            (per-unit lists, solver tallies, timings); every other field is protocol.
        tested: entry fields a check exists to detect (compared, never refused as a mismatch).
        resolution: the smallest step the value can take, from its entry (one sample of a k-NN
            fraction), or None for a continuous value.
        seed_dependent: for ``gate="exact"``: the count depends on the evaluation seed (which
            examples, which encoder noise), so two runs at different seeds may differ by a count
            or two; ``genbench check --across-seeds`` reports it ungated unless a tolerance is given.
        bounds: the closed range the value lives in, (lo, hi) with ``math.inf`` for no upper end
            (fractions (0, 1), distances (0, inf)), or None for an unbounded value; intervals
            reported for it stay inside (``harness.core.stats.bounded_interval``).
    """

    key: str
    label: str
    unit: str = ""
    higher_is_better: bool | None = None
    gate: Gate = "statistical"
    gate_reason: str = ""
    measured: frozenset[str] = frozenset()
    tested: frozenset[str] = frozenset()
    resolution: Callable[[Mapping[str, Any]], float] | None = None
    bounds: tuple[float, float] | None = None
    seed_dependent: bool = False

    def protocol_fields(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of ``entry`` that say how the value was measured (what makes two comparable)."""
        skip = ENTRY_MEASURED | self.measured | self.tested
        return {k: v for k, v in entry.items() if k not in skip}


@dataclass(frozen=True)
class MetricEntry:
    """One value of a record with the fields that reproduce it.

    ``value`` is a finite number, or None with ``reason`` saying why (a non-finite result such as
    an infinite reverse KL is stored as None, the reason naming it: records are strict JSON). A
    non-finite float among the top-level ``fields`` (the standard error of an infinite mean) is
    stored as None too.
    """

    value: float | int | None
    fields: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, (bool, np.bool_)):
            raise TypeError("a metric value must be a number, not a bool")
        if isinstance(value, np.generic):
            value = value.item()
            object.__setattr__(self, "value", value)
        if isinstance(value, float) and not math.isfinite(value):
            object.__setattr__(self, "value", None)
            object.__setattr__(self, "reason", self.reason or f"the value was {value}")
        elif value is not None and not isinstance(value, (int, float)):
            raise TypeError(f"a metric value must be a number or None, got {type(value).__name__}")
        if self.value is None and not self.reason:
            raise ValueError("a metric entry without a value needs a reason")
        clash = {"value", "value_reason"} & set(self.fields)
        if clash:
            raise ValueError(f"entry fields may not be named {sorted(clash)}")
        if any(isinstance(v, float) and not math.isfinite(v) for v in self.fields.values()):
            # a spread of an infinite value, say: not available, and records stay strict JSON
            object.__setattr__(self, "fields", {k: None if isinstance(v, float) and not math.isfinite(v) else v
                                                for k, v in self.fields.items()})

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                     reason: str | None = None) -> MetricEntry:
        """The entry of a ``{"value": ..., **fields}`` summary, with ``extra`` fields appended."""
        fields = {k: v for k, v in summary.items() if k != "value"}
        return cls(summary["value"], {**fields, **(extra or {})}, reason=reason)

    def to_json(self) -> dict[str, Any]:
        """The record form: ``{"value": ..., **fields}`` plus ``value_reason`` when the value is None."""
        out: dict[str, Any] = {"value": self.value, **self.fields}
        if self.value is None:
            out["value_reason"] = self.reason
        return out


@dataclass(frozen=True)
class MetricInputs:
    """What the runner hands every metric; each reads only what its ``needs`` name.

    Attributes:
        seed: the run seed (KID subsets, IS shuffles and per-example streams derive from it).
        fake_features: float32 [n, d] features of the generated set, or None.
        real_features: float32 [n_ref, d] features of the reference set, or None.
        fake_stats, real_stats: float64 (mean [d], covariance [d, d]) streamed over the full sets,
            or None (then a metric fits them from the feature rows). A reference given as a
            statistics file (``harness.reference_stats``) has ``real_stats`` and no ``real_features``.
        real_n: the rows behind ``real_stats`` when ``real_features`` is None (``n_real`` reads it).
        fake_logits: float32 [n, K] class logits of the generated set, or None.
        fake_labels: int64 [n] the class each generated row was requested as, or None.
        real_labels: int64 [n_ref] the class of each reference row (same rows as ``real_features``), or None.
        samples: the generated rows [n, D] in data space (tabular data), or None.
        mixture: the reference set's mixture components (``GaussianMixture``), or None.
        log_density: the reference distribution's exact log density in nats, float64 [N] of rows
            [N, D] (``DatasetMeta.log_density``), or None.
        train_features: float32 [n_train, d] features of the model's training set, same extractor,
            or None (the memorisation tests need them; the reference is then the held-out set).
        feature_extractor: name of the extractor behind the features.
        feature_dim: d.
        model: the model under evaluation (model metrics), or None.
        data: the evaluation data (``harness.runner.EvalData``: batches, spec, n), or None.
        sampling: what the sampling pass recorded (NFE tallies, wall time), or None.
        device: torch device string of the run.
        progress: whether long loops show a progress bar.
        num_samples: how many samples a model metric that draws its own (straightness) uses.
        batch_size: examples per model call.
    """

    seed: int
    fake_features: np.ndarray | None = None
    real_features: np.ndarray | None = None
    fake_stats: tuple[np.ndarray, np.ndarray] | None = None
    real_stats: tuple[np.ndarray, np.ndarray] | None = None
    real_n: int | None = None
    fake_logits: np.ndarray | None = None
    fake_labels: np.ndarray | None = None
    real_labels: np.ndarray | None = None
    samples: np.ndarray | None = None
    mixture: Any = None
    log_density: Callable[[np.ndarray], np.ndarray] | None = None
    train_features: np.ndarray | None = None
    feature_extractor: str | None = None
    feature_dim: int | None = None
    model: Any = None
    data: Any = None
    sampling: Mapping[str, Any] | None = None
    device: str = "cpu"
    progress: bool = False
    num_samples: int = 0
    batch_size: int = 100

    @property
    def n_fake(self) -> int:
        return 0 if self.fake_features is None else len(self.fake_features)

    @property
    def n_real(self) -> int:
        if self.real_features is not None:
            return len(self.real_features)
        return 0 if self.real_n is None else self.real_n

    def subset(self, rows: np.ndarray, ref_rows: np.ndarray, seed: int) -> MetricInputs:
        """The inputs restricted to generated ``rows`` and reference ``ref_rows`` (a half-sample),
        with the replicate's estimator ``seed``; streamed statistics are dropped (refit on the rows)."""
        pick = (lambda a: None if a is None else a[rows])  # noqa: E731
        return replace(
            self, seed=seed, fake_features=pick(self.fake_features), fake_logits=pick(self.fake_logits),
            fake_labels=pick(self.fake_labels), samples=pick(self.samples), fake_stats=None, real_stats=None,
            real_features=None if self.real_features is None else self.real_features[ref_rows],
            real_labels=None if self.real_labels is None else self.real_labels[ref_rows],
        )


@dataclass(frozen=True)
class ModelData:
    """The evaluation data a model metric scores.

    Attributes:
        batches: (index of the first example, uint8 images or float rows [B, ...]) in example order,
            on the run's device.
        spec: the model's ``DataSpec`` (how data becomes model input).
        n: number of examples.
        dataset: the data set's name as given.
    """

    batches: list[tuple[int, Any]]
    spec: Any
    n: int
    dataset: str

    def common(self, seed: int) -> dict[str, Any]:
        """Fields every model-metric entry carries: which examples, which seed."""
        return {"n": self.n, "dataset": self.dataset, "seed": seed}


Compute = Callable[[MetricInputs, Any], dict[str, MetricEntry]]


@dataclass(frozen=True)
class Metric:
    """Everything the pipeline needs to know about one metric.

    Attributes:
        name: registry name, as given to ``--metrics`` (kebab- or snake-case).
        keys: the record keys it writes.
        needs: names from :data:`NEEDS`; all must be met for the metric to run.
        description: one line for ``genbench ls metrics``.
        reference: the paper (and equation) that defines it.
        compute: ``compute(inputs, options) -> {key: MetricEntry}``; ``options`` is the run's
            :class:`harness.core.options.MetricOptions`.
        settings: the option names of ``MetricOptions`` it reads: its protocol settings.
        min_samples: the fewest rows per set it can work with, from the options.
        uncertainty: how its standard error is estimated: ``"half-sample"`` (replicates on half of
            each set, ``harness.core.stats``), ``"per-example"`` (standard error and block means of
            per-example values), ``"exact"`` (a count or a deterministic number) or ``"none"``.
        default: runs when no ``--metrics`` are given and its needs are met.
        partial_support: ``(model) -> reason | None``, for a metric of which some models get only
            some keys (NFE cannot be known for a model without a ``net`` module that declares no
            NFE; its throughput still is measured): a requested metric whose model has a reason is
            an error before any work; an unrequested one runs, and the reason is recorded under
            ``skipped``.
        uses_gaussian_fit: reads the sets' streamed mean and covariance (``fake_stats``/``real_stats``);
            when no selected metric does, extraction never allocates their [d, d] sums.
        reference_use: what ``compute`` reads of the reference set: its feature rows (``"rows"``),
            only its Gaussian fit (``"statistics"``: ``real_stats``, and ``n_real`` for the record),
            or nothing (``"none"``). A reference file holding statistics only feeds the last two;
            a ``"rows"`` metric is then skipped with the reason (an error when requested).
        compute_replicated: for half-sample metrics whose replicates can share the run's work,
            ``(inputs, options, [(generated rows, reference rows), ...])`` -> (the run's entries, one
            entry dict per half-sample), equal to ``compute`` on the run and on each
            ``inputs.subset``; used instead of ``compute`` when replicates are asked for. Such a
            metric has no ``replicate_options``.
        replicate_options: for half-sample metrics, ``(options, full inputs, m, m_ref)`` -> the options
            a replicate of ``m`` generated and ``m_ref`` reference rows runs with (e.g. KID's subset
            size capped at m); default: the run's own.
    """

    name: str
    keys: tuple[MetricKey, ...]
    needs: tuple[str, ...]
    description: str
    reference: str
    compute: Compute
    settings: tuple[str, ...] = ()
    min_samples: Callable[[Any], int] = lambda options: 2
    uncertainty: Uncertainty = "none"
    default: bool = True
    partial_support: Callable[[Any], str | None] | None = None
    replicate_options: Callable[[Any, MetricInputs, int, int], Any] | None = None
    compute_replicated: Callable[[MetricInputs, Any, list[tuple[Any, Any]]],
                                 tuple[dict[str, MetricEntry], list[dict[str, MetricEntry]]]] | None = None
    uses_gaussian_fit: bool = False
    reference_use: ReferenceUse = "rows"

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown needs {unknown}; known: {', '.join(NEEDS)}")
        if not self.keys:
            raise ValueError(f"metric {self.name!r} writes no keys")
        if self.compute_replicated is not None and (self.replicate_options is not None or self.uncertainty != "half-sample"):
            raise ValueError(f"metric {self.name!r}: compute_replicated needs uncertainty 'half-sample' and no replicate_options")
        if self.reference_use not in ("rows", "statistics", "none"):
            raise ValueError(f"metric {self.name!r}: reference_use {self.reference_use!r} is not one of rows, statistics, none")
        if self.reference_use == "statistics" and not self.uses_gaussian_fit:
            raise ValueError(f"metric {self.name!r}: reference_use 'statistics' reads real_stats, so it needs uses_gaussian_fit=True")

    @property
    def sample_only(self) -> bool:
        """True when two sample sets are enough (``genbench eval-samples`` can run it)."""
        return all(n in SAMPLE_NEEDS for n in self.needs)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k.key for k in self.keys)
