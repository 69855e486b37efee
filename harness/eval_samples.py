"""Evaluate a set of samples against a reference set: one feature pass, every sample metric.

Plan: load both sets, check they are comparable, subsample to ``num_samples`` with a seeded
rule, extract features once per set (the reference set through the content-addressed cache),
then hand the same arrays to FID, KID, IS and PRDC. Every metric entry in the record names the
feature space, weights hash, resize protocol, sample counts, seeds and estimator settings.
Nothing is written unless every requested metric succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.config import config_from_dict
from harness.core.device import check_device
from harness.core.metric import Metric, MetricInputs
from harness.core.options import RESIZE_PROTOCOLS, MetricOptions, SampleMetricOptions
from harness.datasets import Dataset, load_dataset
from harness.features import FeatureSet, extract_features, extract_reference_features
from harness.planner import check_metric_names, metric_named, sample_metrics
from harness.planner import compute_metrics as run_metrics
from harness.store.records import SCHEMA, run_info
from metrics.features import FeatureExtractor, get_feature_extractor
from metrics.fid import STANDARD_EXTRACTOR

log = logging.getLogger(__name__)

DEFAULT_EXTRACTOR = {"image": STANDARD_EXTRACTOR, "tabular": "identity"}


@dataclass(frozen=True)
class SampleEvalConfig:
    """Options of ``genbench eval-samples`` (unknown keys are rejected by ``from_dict``).

    ``metrics=None`` runs every default sample metric (``Metric.default``) whose needs the data
    meet; ``sample_metrics`` holds the estimators' settings (``kid_subset_size=None`` means
    min(1000, n_samples, n_reference), the value used is recorded). ``replicates`` half-sample
    replicates estimate each metric's standard error for drift checks (``harness.core.stats``);
    0 disables them. ``train``: the model's training set, for the memorisation tests (the
    reference is then the held-out set); all its rows are used.
    """

    samples: str
    reference: str
    metrics: tuple[str, ...] | None = None
    feature_extractor: str | None = None
    inception_weights: str | None = None
    resize: str = "tf-bilinear"
    num_samples: int | None = None
    seed: int = 0
    batch_size: int = 50
    device: str = "cpu"
    sample_metrics: SampleMetricOptions = field(default_factory=SampleMetricOptions)
    use_cache: bool = True
    replicates: int = 10
    train: str | None = None

    def __post_init__(self) -> None:
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
            if not self.metrics:
                raise ValueError("--metrics is empty; choose from " + ", ".join(m.name for m in sample_metrics()))
            check_metric_names(self.metrics)
            for name in self.metrics:
                metric = metric_named(name)
                if not metric.sample_only:
                    names = ", ".join(m.name for m in sample_metrics())
                    raise ValueError(f"metric {name!r} needs a model; use `genbench eval` (sample metrics: {names})")
        if isinstance(self.sample_metrics, dict):
            object.__setattr__(self, "sample_metrics", SampleMetricOptions(**self.sample_metrics))
        if self.resize not in RESIZE_PROTOCOLS:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_PROTOCOLS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        check_replicates(self.replicates)
        check_device(self.device)

    @property
    def options(self) -> MetricOptions:
        return MetricOptions(sample=self.sample_metrics)

    def selected(self) -> list[Metric]:
        """The sample metrics this run asks for (all defaults when ``metrics`` is None)."""
        return [m for m in sample_metrics() if (m.name in self.metrics if self.metrics is not None else m.default)]

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SampleEvalConfig:
        """Build from a mapping (suite files); flat sub-config options are routed, unknown keys refused."""
        return config_from_dict(cls, options)


def check_replicates(replicates: int) -> None:
    if replicates == 1 or replicates < 0:
        raise ValueError(f"replicates must be 0 (off) or >= 2 half-sample replicates, got {replicates}")


@dataclass
class _Plan:
    samples: Dataset
    reference: Dataset
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: Dataset | None = None


def minimum_samples(cfg: SampleEvalConfig) -> dict[str, int]:
    """The fewest samples per set each explicitly requested metric can work with (a default metric
    short of rows is skipped with the reason instead, ``harness.planner.data_need_missing``)."""
    return {m.name: m.min_samples(cfg.options) for m in cfg.selected()} if cfg.metrics is not None else {}


def select_rows(data: Dataset, num_samples: int | None, seed: int, role: str) -> tuple[Dataset, dict[str, Any]]:
    """Seeded subset of ``num_samples`` rows (sorted, so file order is kept), recorded."""
    n_total = len(data)
    selection: dict[str, Any] = {"n_total": n_total, "n_used": n_total, "rule": "all rows"}
    if num_samples is None or num_samples == n_total:
        return data, selection
    if num_samples > n_total:
        raise ValueError(
            f"--num-samples {num_samples} exceeds the {n_total} rows of the {role} set {data.name!r}; "
            "lower --num-samples or provide more samples"
        )
    rows = np.sort(np.random.default_rng(seed).choice(n_total, num_samples, replace=False))
    selection = {
        "n_total": n_total,
        "n_used": num_samples,
        "rule": f"numpy default_rng({seed}).choice(n_total, n_used, replace=False), sorted",
    }
    labels = None if data.labels is None else data.labels[rows]
    subset = Dataset(name=data.name, x=data.x[rows], labels=labels, kind=data.kind, source=data.source, meta=data.meta)
    return subset, selection


def check_values(data: Dataset, role: str) -> None:
    if data.kind == "image":
        if data.x.dtype != np.uint8:
            raise ValueError(
                f"{role} images must be uint8 in [0, 255], got {data.x.dtype}; convert model output with "
                "e.g. (x * 127.5 + 128).clip(0, 255).astype(np.uint8) for data in [-1, 1]"
            )
    elif not np.isfinite(data.x).all():
        bad = int((~np.isfinite(data.x)).any(axis=tuple(range(1, data.x.ndim))).sum())
        raise ValueError(f"{role} set {data.name!r} has {bad} rows with NaN or Inf values")


def plan(cfg: SampleEvalConfig) -> _Plan:
    """Load and validate both sets; nothing expensive happens here."""
    samples = load_dataset(cfg.samples, num_samples=cfg.num_samples, seed=cfg.seed)
    reference = load_dataset(cfg.reference, num_samples=cfg.num_samples, seed=cfg.seed + 1)
    for data, role in ((samples, "samples"), (reference, "reference")):
        check_values(data, role)
    if samples.kind != reference.kind:
        raise ValueError(
            f"cannot compare {samples.kind} samples {samples.name!r} {samples.x.shape[1:]} with "
            f"{reference.kind} reference {reference.name!r} {reference.x.shape[1:]}"
        )
    if samples.kind == "tabular" and samples.x.shape[1:] != reference.x.shape[1:]:
        raise ValueError(
            f"shape mismatch: samples rows are {samples.x.shape[1:]} but reference rows are "
            f"{reference.x.shape[1:]}; both sets must have the same dimension"
        )
    samples, sel_s = select_rows(samples, cfg.num_samples, cfg.seed, "samples")
    reference, sel_r = select_rows(reference, cfg.num_samples, cfg.seed + 1, "reference")
    need = minimum_samples(cfg)
    for data, role in ((samples, "samples"), (reference, "reference")):
        short = {m: k for m, k in need.items() if len(data) < k}
        if short:
            detail = ", ".join(f"{m} needs at least {k}" for m, k in short.items())
            raise ValueError(f"too few {role}: {len(data)} in {data.name!r}; {detail}")
    train = None
    if cfg.train is not None:
        train = load_dataset(cfg.train, seed=cfg.seed + 2)
        check_values(train, "train")
        if train.kind != samples.kind or train.x.shape[1:] != samples.x.shape[1:]:
            raise ValueError(f"--train {cfg.train!r} holds {train.kind} rows {train.x.shape[1:]} but the samples are "
                             f"{samples.kind} {samples.x.shape[1:]}; give the model's training set")
    return _Plan(samples=samples, reference=reference, selection={"samples": sel_s, "reference": sel_r}, train=train)


def build_extractor(cfg: SampleEvalConfig, data: Dataset) -> FeatureExtractor:
    """The extractor for ``data``'s kind: the configured one, else the default for images / rows."""
    kind = data.kind
    name = cfg.feature_extractor or DEFAULT_EXTRACTOR[kind]
    options: dict[str, Any] = {"device": cfg.device}
    if name == STANDARD_EXTRACTOR:
        options.update(weights_path=cfg.inception_weights, resize=cfg.resize)
    elif name == "identity" and kind == "tabular":
        options.update(dim=int(data.x.shape[1]))
    extractor = get_feature_extractor(name, **options)
    if extractor.input_kind != kind:
        hint = "identity" if kind == "tabular" else "inception-v3 or mnist-cnn"
        raise ValueError(
            f"feature extractor {name!r} takes {extractor.input_kind} data but the sets are {kind}; "
            f"use --feature-extractor {hint}"
        )
    return extractor


def feature_inputs(fake: FeatureSet, real: FeatureSet, extractor: FeatureExtractor, *, seed: int,
                   samples: Dataset | None = None, reference: Dataset | None = None,
                   train: FeatureSet | None = None) -> MetricInputs:
    """What the sample metrics read: both feature sets (with their streamed Gaussian fits), the
    generated set's logits, its raw rows (tabular data) and what is known of the reference's distribution."""
    return MetricInputs(
        seed=seed, fake_features=fake.features, real_features=real.features,
        fake_stats=(fake.stats.mean, fake.stats.cov) if fake.stats is not None else None,
        real_stats=(real.stats.mean, real.stats.cov) if real.stats is not None else None,
        fake_logits=fake.logits, feature_extractor=extractor.name, feature_dim=extractor.feature_dim,
        samples=samples.x if samples is not None and samples.kind == "tabular" else None,
        mixture=reference.meta.mixture if reference is not None else None,
        log_density=reference.meta.log_density if reference is not None else None,
        train_features=train.features if train is not None else None,
    )


def describe_dataset(data: Dataset, spec: str, selection: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": spec,
        "name": data.name,
        "kind": data.kind,
        "source": data.source,
        "content_hash": data.content_hash,
        "shape": list(data.x.shape),
        "dtype": str(data.x.dtype),
        "selection": selection,
    }


def score_datasets(
    cfg: SampleEvalConfig,
    samples: Dataset,
    reference: Dataset,
    *,
    reference_selection: dict[str, Any],
    progress: bool = True,
    requested: tuple[str, ...] | None = (),
    train: Dataset | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any], bool]:
    """Features once per set, then every selected sample metric (``harness.planner``).

    ``requested``: the metrics the user named (None: the default set), where they differ from
    ``cfg.metrics`` (``genbench eval`` passes its sample metrics in ``cfg``); ``()``: ``cfg.metrics``.
    Returns (metrics, skipped, extractor protocol, whether the reference came from the cache).
    """
    extractor = build_extractor(cfg, samples)
    gaussian = any(m.uses_gaussian_fit for m in cfg.selected())  # else the [d, d] sums are never allocated
    fake = extract_features(samples, extractor, batch_size=cfg.batch_size, desc="features samples", progress=progress,
                            gaussian=gaussian)
    real = extract_reference_features(
        reference,
        extractor,
        selection=reference_selection,
        batch_size=cfg.batch_size,
        use_cache=cfg.use_cache,
        progress=progress,
        gaussian=gaussian,
    )
    train_features = None if train is None else extract_reference_features(
        train, extractor, selection={"n_total": len(train), "n_used": len(train), "rule": "all rows"},
        batch_size=cfg.batch_size, use_cache=cfg.use_cache, progress=progress, gaussian=False)
    inputs = feature_inputs(fake, real, extractor, seed=cfg.seed, samples=samples, reference=reference,
                            train=train_features)
    metrics, skipped = run_metrics(cfg.selected(), inputs, cfg.options, replicates=cfg.replicates,
                                   requested=cfg.metrics if requested == () else requested)
    return metrics, skipped, extractor.protocol(), real.cached


def evaluate_samples(cfg: SampleEvalConfig, *, progress: bool = True, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation and return the record (the caller writes it)."""
    start = time.perf_counter()
    p = plan(cfg)
    metrics, skipped, features, cached = score_datasets(
        cfg, p.samples, p.reference, reference_selection=p.selection["reference"], progress=progress, train=p.train
    )
    data = {
        "samples": describe_dataset(p.samples, cfg.samples, p.selection["samples"]),
        "reference": {**describe_dataset(p.reference, cfg.reference, p.selection["reference"]), "features_cached": cached},
    }
    if p.train is not None:
        data["train"] = describe_dataset(p.train, cfg.train, {"n_total": len(p.train), "n_used": len(p.train),
                                                              "rule": "all rows"})
    return {
        "schema": SCHEMA,
        "kind": "eval-samples",
        "run": run_info(device=cfg.device, wall_time_s=time.perf_counter() - start, argv=argv),
        "config": asdict(cfg),
        "data": data,
        "features": features,
        "metrics": metrics,
        "skipped": skipped,
    }
