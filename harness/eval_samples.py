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

from harness.bootstrap import BootstrapSettings, bootstrap_sample_metrics
from harness.config import config_from_dict
from harness.datasets import Dataset, load_dataset
from harness.features import FeatureSet, extract_features, extract_reference_features
from harness.store.records import SCHEMA, run_info
from metrics.features import FeatureExtractor, get_feature_extractor
from metrics.fid import frechet_distance
from metrics.info import METRICS, SAMPLE_METRICS
from metrics.inception_score import inception_score
from metrics.kid import kernel_inception_distance
from metrics.modes import mode_metrics
from metrics.prdc import compute_prdc_multi_k

log = logging.getLogger(__name__)

STANDARD_EXTRACTOR = "inception-v3"
DEFAULT_EXTRACTOR = {"image": STANDARD_EXTRACTOR, "tabular": "identity"}
RESIZE_PROTOCOLS = ("tf-bilinear", "clean")


@dataclass(frozen=True)
class SampleEvalConfig:
    """Options of ``genbench eval-samples`` (unknown keys are rejected by ``from_dict``).

    ``kid_subset_size=None`` means min(1000, n_samples, n_reference): the standard 1000 where the
    sets allow it; the value used is recorded. ``bootstrap`` half-sample replicates estimate each
    metric's standard error for drift checks (``harness.bootstrap``); 0 disables them.
    """

    samples: str
    reference: str
    metrics: tuple[str, ...] = ("fid", "kid", "is", "prdc")
    feature_extractor: str | None = None
    inception_weights: str | None = None
    resize: str = "tf-bilinear"
    num_samples: int | None = None
    seed: int = 0
    batch_size: int = 50
    device: str = "cpu"
    kid_subsets: int = 100
    kid_subset_size: int | None = None
    is_splits: int = 10
    pr_nearest_k: int = 3
    dc_nearest_k: int = 5
    use_cache: bool = True
    bootstrap: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        for name in self.metrics:
            METRICS.get(name)  # raises with "did you mean" for a typo
            if name not in SAMPLE_METRICS:
                raise ValueError(f"metric {name!r} needs a model; use `genbench eval` (sample metrics: {', '.join(SAMPLE_METRICS)})")
        if not self.metrics:
            raise ValueError("--metrics is empty; choose from " + ", ".join(METRICS.names()))
        if self.resize not in RESIZE_PROTOCOLS:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_PROTOCOLS)}")
        for name in ("batch_size", "kid_subsets", "is_splits", "pr_nearest_k", "dc_nearest_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        if self.bootstrap == 1 or self.bootstrap < 0:
            raise ValueError(f"bootstrap must be 0 (off) or >= 2 replicates, got {self.bootstrap}")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SampleEvalConfig:
        """Build from a mapping (suite files); unknown keys are refused with the known ones listed."""
        return config_from_dict(cls, options)


@dataclass
class _Plan:
    samples: Dataset
    reference: Dataset
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)


def minimum_samples(cfg: SampleEvalConfig) -> dict[str, int]:
    """The fewest samples per set each requested metric can work with."""
    need = {"fid": 2, "kid": 2, "is": cfg.is_splits, "prdc": max(cfg.pr_nearest_k, cfg.dc_nearest_k) + 1}
    return {m: need[m] for m in cfg.metrics}


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
    return _Plan(samples=samples, reference=reference, selection={"samples": sel_s, "reference": sel_r})


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


def feature_space_label(extractor_name: str) -> str:
    """FID only in the standard Inception space; elsewhere 'FD[<extractor>]' (never called FID)."""
    return "FID" if extractor_name == STANDARD_EXTRACTOR else f"FD[{extractor_name}]"


def compute_metrics(
    cfg: SampleEvalConfig, fake: FeatureSet, real: FeatureSet, extractor: FeatureExtractor
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every requested metric from the shared features; returns (metrics, skipped).

    With ``cfg.bootstrap`` replicates, each metric that has a standard error gets an
    ``"uncertainty"`` entry (``harness.bootstrap.bootstrap_sample_metrics``), holding the replicate
    values too: two runs at the same seed pair them up in ``genbench check`` (``harness.drift``).
    """
    n_fake, n_real = len(fake.features), len(real.features)
    common = {"feature_extractor": extractor.name, "n_samples": n_fake, "n_reference": n_real}
    kid_subset = cfg.kid_subset_size or min(1000, n_fake, n_real)
    out: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    if "fid" in cfg.metrics:
        value = frechet_distance(fake.stats.mean, fake.stats.cov, real.stats.mean, real.stats.cov)
        out["fid"] = {
            "value": value,
            "label": feature_space_label(extractor.name),
            "estimator": "float64 streaming mean/cov (ddof=1); tr sqrt = nuclear norm of F2^T F1, Sigma = F F^T by eigh",
            "rank_deficient": min(n_fake, n_real) <= extractor.feature_dim,
            **common,
        }
    if "kid" in cfg.metrics:
        mean, std = kernel_inception_distance(
            fake.features, real.features, num_subsets=cfg.kid_subsets, subset_size=kid_subset, seed=cfg.seed
        )
        kid = {
            "estimator": "unbiased MMD², polynomial kernel (x·y/d + 1)^3",
            "subsets": cfg.kid_subsets,
            "subset_size": kid_subset,
            "seed": cfg.seed,
            **common,
        }
        out["kid_mean"] = {"value": mean, **kid}
        out["kid_std"] = {"value": std, **kid}
    if "is" in cfg.metrics:
        if fake.logits is None:
            skipped["is"] = f"feature extractor {extractor.name!r} has no class logits"
        else:
            mean, std = inception_score(fake.logits, splits=cfg.is_splits, seed=cfg.seed)
            info = {"splits": cfg.is_splits, "seed": cfg.seed, "std_ddof": 0, **common}
            out["is_mean"] = {"value": mean, **info}
            out["is_std"] = {"value": std, **info}
    if "prdc" in cfg.metrics:
        both = compute_prdc_multi_k(real.features, fake.features, pr_k=cfg.pr_nearest_k, dc_k=cfg.dc_nearest_k)
        rule = "Naeem et al. 2020 definitions (prdc package), strict '<'"
        for key, k in (("precision", cfg.pr_nearest_k), ("recall", cfg.pr_nearest_k),
                       ("density", cfg.dc_nearest_k), ("coverage", cfg.dc_nearest_k)):
            out[key] = {"value": float(both[key]), "nearest_k": k, "estimator": rule, **common}
    if cfg.bootstrap:
        settings = BootstrapSettings(metrics=cfg.metrics, kid_subsets=cfg.kid_subsets, kid_subset_size=kid_subset,
                                     is_splits=cfg.is_splits, pr_nearest_k=cfg.pr_nearest_k, dc_nearest_k=cfg.dc_nearest_k)
        logits = fake.logits if "is_mean" in out else None
        spread = bootstrap_sample_metrics(fake.features, real.features, logits, settings,
                                          num_boot=cfg.bootstrap, seed=cfg.seed)
        for key, uncertainty in spread.items():
            out[key]["uncertainty"] = uncertainty
    return out, skipped


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
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any], bool]:
    """Features once per set, then every requested sample metric.

    When the reference is a registered Gaussian-mixture toy (``8gaussians-*``, ``25gaussians-*``),
    the mode-collapse measures of ``metrics.modes`` are added (modes covered, high-quality fraction).

    Returns (metrics, skipped, extractor protocol, whether the reference came from the cache).
    """
    extractor = build_extractor(cfg, samples)
    fake = extract_features(samples, extractor, batch_size=cfg.batch_size, desc="features samples", progress=progress)
    real = extract_reference_features(
        reference,
        extractor,
        selection=reference_selection,
        batch_size=cfg.batch_size,
        use_cache=cfg.use_cache,
        progress=progress,
    )
    metrics, skipped = compute_metrics(cfg, fake, real, extractor)
    if samples.kind == "tabular" and reference.meta.mixture is not None:
        metrics.update(mode_metrics(samples.x, reference.meta.mixture))
    return metrics, skipped, extractor.protocol(), real.cached


def evaluate_samples(cfg: SampleEvalConfig, *, progress: bool = True, argv: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation and return the record (the caller writes it)."""
    start = time.perf_counter()
    p = plan(cfg)
    metrics, skipped, features, cached = score_datasets(
        cfg, p.samples, p.reference, reference_selection=p.selection["reference"], progress=progress
    )
    return {
        "schema": SCHEMA,
        "kind": "eval-samples",
        "run": run_info(device=cfg.device, wall_time_s=time.perf_counter() - start, argv=argv),
        "config": asdict(cfg),
        "data": {
            "samples": describe_dataset(p.samples, cfg.samples, p.selection["samples"]),
            "reference": {**describe_dataset(p.reference, cfg.reference, p.selection["reference"]), "features_cached": cached},
        },
        "features": features,
        "metrics": metrics,
        "skipped": skipped,
    }
