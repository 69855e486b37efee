"""Evaluate a set of samples against a reference set: one feature pass, every sample metric.

Plan: load both sets, check they are comparable, subsample to ``num_samples`` with a seeded
rule, extract features once per set (the reference set through the content-addressed cache),
then hand the same arrays to FID, KID, IS and PRDC. Every metric entry in the record names the
feature space, weights hash, resize protocol, sample counts, seeds and estimator settings.
Nothing is written unless every requested metric succeeded.

The reference may instead be a statistics file (``harness.reference_stats``: ``genbench ref``'s,
pytorch-fid's, clean-fid's, EDM's, EDM2's): its protocol is checked against the run's extractor
before any work, FID uses its mean and covariance, the metrics that read reference rows use its
features when it holds them and are skipped (an error when requested) when it does not.
:func:`make_reference` writes such a file (``genbench ref``) from the rows ``eval-samples`` would
use as its reference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.config import config_from_dict
from harness.core.device import check_device
from harness.core.distributed import finished_here_writes
from harness.core.metric import Metric, MetricInputs
from harness.core.options import RESIZE_PROTOCOLS, MetricOptions, SampleMetricOptions
from harness.datasets import Dataset, load_dataset
from harness.features import FeatureSet, extract_features, extract_reference_features
from harness.planner import AUTO_NEEDS, check_metric_names, metric_named, sample_metrics
from harness.planner import compute_metrics as run_metrics
from harness.reference_stats import (
    ReferenceStats,
    check_dimension,
    check_protocol,
    is_reference_file,
    read_reference,
    write_reference,
)
from harness.store.records import SCHEMA, check_output_path, run_info
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
    reference is then the held-out set); all its rows are used. ``reference`` may be a statistics
    file (``harness.reference_stats``), used whole (``num_samples`` then subsamples the samples only);
    ``assume_reference_protocol`` accepts one that records no protocol (pytorch-fid, clean-fid, EDM,
    EDM2) as made with this run's extractor, and the record says so.
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
    device: str = "auto"  # resolved in __post_init__ (harness.core.device.check_device)
    sample_metrics: SampleMetricOptions = field(default_factory=SampleMetricOptions)
    use_cache: bool = True
    replicates: int = 10
    train: str | None = None
    assume_reference_protocol: bool = False

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
        object.__setattr__(self, "device", check_device(self.device))

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
    reference: Dataset | ReferenceStats
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


def _plan_reference_file(cfg: SampleEvalConfig, samples: Dataset) -> _Plan:
    """Samples against a reference statistics file: kinds and row widths compared, the file used whole."""
    ref = read_reference(cfg.reference)
    check_values(samples, "samples")
    if samples.kind != ref.kind:
        raise ValueError(f"cannot compare {samples.kind} samples {samples.name!r} with the {ref.kind} statistics of "
                         f"{ref.path}")
    shape = (ref.manifest or {}).get("data", {}).get("shape")
    if samples.kind == "tabular" and shape is not None and list(samples.x.shape[1:]) != list(shape[1:]):
        raise ValueError(f"shape mismatch: samples rows are {samples.x.shape[1:]} but {ref.path} was made from rows "
                         f"{tuple(shape[1:])}; both must have the same dimension")
    if cfg.train is not None and ref.features is None:
        raise ValueError(f"--train compares the training set with the held-out reference rows, but {ref.path} holds "
                         "statistics only; make it with genbench ref --features, or give the held-out data itself")
    samples, sel_s = select_rows(samples, cfg.num_samples, cfg.seed, "samples")
    for name, k in minimum_samples(cfg).items():
        if len(samples) < k:
            raise ValueError(f"too few samples: {len(samples)} in {samples.name!r}; {name} needs at least {k}")
        if ref.rows is not None and ref.rows < k:
            raise ValueError(f"too few reference rows: {ref.rows} in {ref.path}; {name} needs at least {k}")
    train = _load_train(cfg, samples)
    return _Plan(samples=samples, reference=ref, selection={"samples": sel_s}, train=train)


def _load_train(cfg: SampleEvalConfig, samples: Dataset) -> Dataset | None:
    if cfg.train is None:
        return None
    train = load_dataset(cfg.train, seed=cfg.seed + 2)
    check_values(train, "train")
    if train.kind != samples.kind or train.x.shape[1:] != samples.x.shape[1:]:
        raise ValueError(f"--train {cfg.train!r} holds {train.kind} rows {train.x.shape[1:]} but the samples are "
                         f"{samples.kind} {samples.x.shape[1:]}; give the model's training set")
    return train


def plan(cfg: SampleEvalConfig) -> _Plan:
    """Load and validate both sets; nothing expensive happens here."""
    samples = load_dataset(cfg.samples, num_samples=cfg.num_samples, seed=cfg.seed)
    if is_reference_file(cfg.reference):
        return _plan_reference_file(cfg, samples)
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
    train = _load_train(cfg, samples)
    return _Plan(samples=samples, reference=reference, selection={"samples": sel_s, "reference": sel_r}, train=train)


def build_extractor(cfg: SampleEvalConfig | ReferenceConfig, data: Dataset) -> FeatureExtractor:
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
                   train: FeatureSet | None = None, device: str = "cpu") -> MetricInputs:
    """What the sample metrics read: both feature sets (with their streamed Gaussian fits), the
    generated set's logits, its raw rows (tabular data) and what is known of the reference's distribution."""
    return MetricInputs(
        seed=seed, fake_features=fake.features, real_features=real.features,
        fake_stats=(fake.stats.mean, fake.stats.cov) if fake.stats is not None else None,
        real_stats=(real.stats.mean, real.stats.cov) if real.stats is not None else None,
        fake_logits=fake.logits, fake_labels=samples.labels if samples is not None else None,
        real_labels=_labels_of(reference, real.features),
        feature_extractor=extractor.name, feature_dim=extractor.feature_dim,
        samples=samples.x if samples is not None and samples.kind == "tabular" else None,
        mixture=reference.meta.mixture if reference is not None else None,
        log_density=reference.meta.log_density if reference is not None else None,
        train_features=train.features if train is not None else None, device=device,
    )


def _labels_of(reference: Dataset | None, features: np.ndarray | None) -> np.ndarray | None:
    """The reference rows' labels when they are the rows behind ``features``, else None."""
    if reference is None or reference.labels is None or features is None or len(reference.labels) != len(features):
        return None
    return np.asarray(reference.labels, dtype=np.int64)


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


def statistics_only_reason(metric: Metric) -> str:
    """Why ``metric`` cannot run on a reference file without features."""
    return (f"the reference file holds statistics only; {metric.name} needs the reference's features "
            "(make the file with genbench ref --features)")


def _metrics_for_reference_file(cfg: SampleEvalConfig, ref: ReferenceStats,
                                requested: tuple[str, ...] | None) -> tuple[list[Metric], dict[str, str]]:
    """(the selected metrics a statistics file can feed, {name: reason} of the others); a requested one is an error."""
    selected = cfg.selected()
    if ref.features is not None:
        return selected, {}
    run, skipped = [], {}
    for metric in selected:
        # a metric that runs when the reference's metadata or a --train set allow it is left to the planner:
        # a file carries no mixture or density, and --train with a statistics-only file is refused in plan()
        automatic = metric.default and bool(AUTO_NEEDS & set(metric.needs))
        if metric.reference_use != "rows" or automatic:
            run.append(metric)
        elif requested is not None and metric.name in requested:
            raise ValueError(f"{metric.name} needs the reference's feature rows, but {ref.path} holds statistics only "
                             f"(mu, sigma); make it with genbench ref --features, or drop {metric.name} from --metrics")
        else:
            skipped[metric.name] = statistics_only_reason(metric)
    return run, skipped


def _score_against_file(cfg: SampleEvalConfig, samples: Dataset, ref: ReferenceStats, *, progress: bool,
                        requested: tuple[str, ...] | None, train: Dataset | None
                        ) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any], bool]:
    extractor = build_extractor(cfg, samples)
    check_dimension(ref, extractor.name, extractor.feature_dim)  # before any feature pass
    check_protocol(ref, extractor.protocol(), assume=cfg.assume_reference_protocol)
    selected, skipped = _metrics_for_reference_file(cfg, ref, requested)
    gaussian = any(m.uses_gaussian_fit for m in selected)
    fake = extract_features(samples, extractor, batch_size=cfg.batch_size, desc="features samples", progress=progress,
                            gaussian=gaussian)
    train_features = None if train is None else extract_reference_features(
        train, extractor, selection={"n_total": len(train), "n_used": len(train), "rule": "all rows"},
        batch_size=cfg.batch_size, use_cache=cfg.use_cache, progress=progress, gaussian=False)
    inputs = MetricInputs(
        seed=cfg.seed, fake_features=fake.features, real_features=ref.features,
        fake_stats=(fake.stats.mean, fake.stats.cov) if fake.stats is not None else None,
        real_stats=(ref.mu, ref.sigma),
        # a file that does not record its rows does not bind the per-set minimum; the entries' n_reference
        # are set to None below
        real_n=ref.rows if ref.rows is not None else len(samples),
        fake_logits=fake.logits, fake_labels=samples.labels,
        feature_extractor=extractor.name, feature_dim=extractor.feature_dim,
        samples=samples.x if samples.kind == "tabular" else None,
        train_features=train_features.features if train_features is not None else None, device=cfg.device,
    )
    metrics, more = run_metrics(selected, inputs, cfg.options, replicates=cfg.replicates, requested=requested)
    if ref.rows is None:
        for entry in metrics.values():
            if "n_reference" in entry:
                entry["n_reference"] = None
    return metrics, {**skipped, **more}, extractor.protocol(), False


def score_datasets(
    cfg: SampleEvalConfig,
    samples: Dataset,
    reference: Dataset | ReferenceStats,
    *,
    reference_selection: dict[str, Any],
    progress: bool = True,
    requested: tuple[str, ...] | None = (),
    train: Dataset | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any], bool]:
    """Features once per set, then every selected sample metric (``harness.planner``).

    ``requested``: the metrics the user named (None: the default set), where they differ from
    ``cfg.metrics`` (``genbench eval`` passes its sample metrics in ``cfg``); ``()``: ``cfg.metrics``.
    ``reference``: a data set, or a statistics file (``reference_selection`` is then unused).
    Returns (metrics, skipped, extractor protocol, whether the reference came from the cache).
    """
    requested = cfg.metrics if requested == () else requested
    if isinstance(reference, ReferenceStats):
        return _score_against_file(cfg, samples, reference, progress=progress, requested=requested, train=train)
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
                            train=train_features, device=cfg.device)
    metrics, skipped = run_metrics(cfg.selected(), inputs, cfg.options, replicates=cfg.replicates, requested=requested)
    return metrics, skipped, extractor.protocol(), real.cached


def describe_reference(cfg: SampleEvalConfig, reference: Dataset | ReferenceStats, selection: dict[str, Any] | None,
                       features: dict[str, Any], cached: bool) -> dict[str, Any]:
    """The record's ``data.reference``: the data set, or the statistics file with its sha256, manifest and protocol."""
    if isinstance(reference, ReferenceStats):
        return reference.describe(cfg.reference, check_protocol(reference, features, assume=cfg.assume_reference_protocol))
    return {**describe_dataset(reference, cfg.reference, selection or {}), "features_cached": cached}


def evaluate_samples(cfg: SampleEvalConfig, *, progress: bool = True, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation and return the record (the caller writes it)."""
    start = time.perf_counter()
    p = plan(cfg)
    ref_selection = p.selection.get("reference")
    metrics, skipped, features, cached = score_datasets(
        cfg, p.samples, p.reference, reference_selection=ref_selection or {}, progress=progress, train=p.train
    )
    data = {
        "samples": describe_dataset(p.samples, cfg.samples, p.selection["samples"]),
        "reference": describe_reference(cfg, p.reference, ref_selection, features, cached),
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


@dataclass(frozen=True)
class ReferenceConfig:
    """Options of ``genbench ref``: the reference data, the extractor, and the file to write.

    The rows are those ``eval-samples --reference DATA`` uses at the same ``num_samples`` and
    ``seed`` (all rows when ``num_samples`` is None), so FID against the file equals FID against
    the data. ``features``: also store the feature rows (for KID, PRDC and the other row metrics).
    """

    data: str
    out: str
    features: bool = False
    feature_extractor: str | None = None
    inception_weights: str | None = None
    resize: str = "tf-bilinear"
    num_samples: int | None = None
    seed: int = 0
    batch_size: int = 50
    device: str = "auto"  # resolved in __post_init__ (harness.core.device.check_device)
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not str(self.out).lower().endswith(".npz"):
            raise ValueError(f"--out {self.out!r}: a reference file is an .npz; give a name ending in .npz")
        if self.resize not in RESIZE_PROTOCOLS:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_PROTOCOLS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        object.__setattr__(self, "device", check_device(self.device))


def make_reference(cfg: ReferenceConfig, *, progress: bool = True, argv: list[str] | None = None) -> dict[str, Any]:
    """Extract the reference set's features once and write ``cfg.out`` (``harness.reference_stats``).

    Returns the manifest written (extractor protocol, data description, rows, versions).
    """
    start = time.perf_counter()
    check_output_path(cfg.out)
    data = load_dataset(cfg.data, num_samples=cfg.num_samples, seed=cfg.seed + 1)
    check_values(data, "reference")
    data, selection = select_rows(data, cfg.num_samples, cfg.seed + 1, "reference")
    if len(data) < 2:
        raise ValueError(f"{cfg.data!r} has {len(data)} row; a covariance needs at least 2")
    extractor = build_extractor(cfg, data)
    real = extract_reference_features(data, extractor, selection=selection, batch_size=cfg.batch_size,
                                      use_cache=cfg.use_cache, progress=progress, gaussian=True)
    stats = real.stats
    if stats is None:  # gaussian=True streams them; this guards a changed extract_reference_features
        raise RuntimeError("the feature pass returned no Gaussian fit")
    manifest = {
        "extractor": extractor.protocol(),
        "data": describe_dataset(data, cfg.data, selection),
        "rows": len(data),
        "feature_dim": extractor.feature_dim,
        "holds_features": cfg.features,
        "statistics": "mu: float64 mean; sigma: float64 unbiased covariance (ddof=1), streamed (metrics.fid.GaussianStats)",
        "created": run_info(device=cfg.device, wall_time_s=time.perf_counter() - start, argv=argv),
    }
    if finished_here_writes():
        written = write_reference(cfg.out, mu=stats.mean, sigma=stats.cov,
                                  features=real.features if cfg.features else None, manifest=manifest)
        log.info("reference statistics written to %s", written)
    return manifest
