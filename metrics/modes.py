"""Mode-collapse measures for Gaussian-mixture toys (8gaussians ring, 25gaussians grid).

The protocol of the mode-collapse literature (Metz et al. 2017, "Unrolled GANs", sec. 3.1;
Srivastava et al. 2017, "VEEGAN", sec. 5.1; Lin et al. 2018, "PacGAN", sec. 4.1):

* every sample is assigned to its **nearest** mode center (Euclidean);
* a sample is **high quality** if it lies within ``threshold_std`` = 3 standard deviations of
  that center (distance ≤ 3σ);
* a mode is **covered** if it receives at least ``min_count`` high-quality samples. We default
  to ``min_count = 1``, PacGAN's rule (VEEGAN's text says the same: "a mode is captured if there
  are samples within 3σ"); pass a larger ``min_count`` for a stricter count that is less
  sensitive to a few stray samples (some works use e.g. 20 of 2500 samples);
* ``modes_covered_share``: modes whose high-quality samples number at least ``min_share`` (1/5)
  of the mode's expected share N·w_m of the N samples. ``min_count = 1`` cannot tell a model from
  chance: uniform noise on [−5, 5]² puts 0.7 of 1,000 samples within 3σ of each of the 25 grid
  modes on average and so "covers" about 13 of them; at one fifth of the share (8 samples per mode)
  it covers none, while perfect samples (40 per mode) cover all 25;
* ``mode_reverse_kl``: PacGAN's reverse KL, KL(q ‖ p) = Σ_m q_m log(q_m / p_m), between the
  histogram q of the *high-quality* samples over modes (normalised over those samples) and the
  true mode weights p (uniform, 1/M). 0 when every mode gets its share; log M when all
  high-quality samples fall into one mode; ``inf`` when no sample is high quality.

All functions are pure: numpy in, Python numbers out. ``samples`` [N, 2] (torch tensors are
accepted), ``centers`` [M, 2], ``std`` σ the per-coordinate std of each (isotropic) component.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey


__all__ = [
    "METRIC",
    "assign_modes",
    "high_quality_fraction",
    "mode_counts",
    "mode_metrics",
    "mode_reverse_kl",
    "modes_covered",
]

DEFAULT_THRESHOLD_STD = 3.0
DEFAULT_MIN_COUNT = 1
DEFAULT_MIN_SHARE = 0.2



def _as_points(samples: Any, centers: np.ndarray) -> np.ndarray:
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != centers.shape[1]:
        raise ValueError(f"samples must be [N, {centers.shape[1]}], got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or Inf values")
    return x


def assign_modes(samples: Any, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest center int64 [N], Euclidean distance to it float64 [N])."""
    centers = np.asarray(centers, dtype=np.float64)
    x = _as_points(samples, centers)
    d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)  # [N, M]
    idx = d2.argmin(1)
    return idx.astype(np.int64), np.sqrt(d2[np.arange(len(x)), idx])


def _high_quality(samples: Any, centers: np.ndarray, std: float, threshold_std: float) -> tuple[np.ndarray, np.ndarray]:
    if not std > 0 or not threshold_std > 0:
        raise ValueError(f"std and threshold_std must be positive, got {std}, {threshold_std}")
    idx, dist = assign_modes(samples, centers)
    return idx, dist <= threshold_std * std


def mode_counts(samples: Any, centers: np.ndarray, std: float, *, threshold_std: float = DEFAULT_THRESHOLD_STD) -> np.ndarray:
    """Number of high-quality samples per mode, int64 [M]."""
    idx, hq = _high_quality(samples, centers, std, threshold_std)
    return np.bincount(idx[hq], minlength=len(centers)).astype(np.int64)


def modes_covered(samples: Any, centers: np.ndarray, std: float, *, threshold_std: float = DEFAULT_THRESHOLD_STD,
                  min_count: int = DEFAULT_MIN_COUNT) -> int:
    """Number of modes with at least ``min_count`` high-quality samples (PacGAN: min_count = 1)."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    return int((mode_counts(samples, centers, std, threshold_std=threshold_std) >= min_count).sum())


def high_quality_fraction(samples: Any, centers: np.ndarray, std: float, *, threshold_std: float = DEFAULT_THRESHOLD_STD) -> float:
    """Fraction of samples within ``threshold_std``·σ of their nearest center."""
    _, hq = _high_quality(samples, centers, std, threshold_std)
    return float(hq.mean())


def mode_reverse_kl(samples: Any, centers: np.ndarray, std: float, *, threshold_std: float = DEFAULT_THRESHOLD_STD,
                    weights: np.ndarray | None = None) -> float:
    """KL(q ‖ p) in nats, q the high-quality samples' mode histogram, p the mode weights (default uniform)."""
    counts = mode_counts(samples, centers, std, threshold_std=threshold_std).astype(np.float64)
    p = np.full(len(centers), 1.0 / len(centers)) if weights is None else np.asarray(weights, dtype=np.float64)
    if p.shape != counts.shape or (p <= 0).any() or not math.isclose(p.sum(), 1.0, rel_tol=1e-9):
        raise ValueError(f"weights must be {len(centers)} positive numbers summing to 1")
    total = counts.sum()
    if total == 0:
        return math.inf
    q = counts / total
    nz = q > 0
    return float((q[nz] * np.log(q[nz] / p[nz])).sum())


def mode_metrics(samples: Any, mixture: Any, *, threshold_std: float = DEFAULT_THRESHOLD_STD,
                 min_count: int = DEFAULT_MIN_COUNT, min_share: float = DEFAULT_MIN_SHARE) -> dict[str, dict[str, Any]]:
    """The mode metrics of ``samples`` [N, D] against a Gaussian mixture (``centers`` [M, D], ``std`` σ, ``name``).

    The mixture is the reference data's metadata (``harness.core.densities.GaussianMixture``).
    Returns record entries ``modes_covered``, ``modes_covered_share``, ``high_quality_fraction`` and
    ``mode_reverse_kl``,
    each ``{"value": ..., ...protocol fields}``.
    """
    centers, std, toy = mixture.centers, mixture.std, mixture.name
    counts = mode_counts(samples, centers, std, threshold_std=threshold_std)
    n = len(_as_points(samples, centers))
    common = {"num_modes": len(centers), "threshold_std": threshold_std, "std": std, "num_samples": n,
              "mixture": toy}
    kl = mode_reverse_kl(samples, centers, std, threshold_std=threshold_std)
    return {
        "modes_covered": {"value": int((counts >= min_count).sum()), "min_count": min_count, **common,
                          "meaning": f"modes with >= {min_count} sample(s) within {threshold_std} std of the "
                                     "mode center, samples assigned to their nearest center (PacGAN protocol)"},
        "modes_covered_share": {"value": int((counts >= min_share * n / len(centers)).sum()), "min_share": min_share,
                                **common,
                                "meaning": f"modes with >= {min_share:g} of their expected share N/M of samples within "
                                           f"{threshold_std} std of the mode center"},
        "high_quality_fraction": {"value": float(counts.sum() / n) if n else math.nan, **common,
                                  "meaning": f"fraction of samples within {threshold_std} std of their nearest mode center"},
        "mode_reverse_kl": {"value": kl, **common,
                            "meaning": "KL(q || uniform) in nats, q the mode histogram of the high-quality samples "
                                       "(PacGAN); inf if none is high quality"},
    }


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    entries = mode_metrics(inputs.samples, inputs.mixture)
    empty = "no sample is high quality (KL of an empty histogram)"
    return {key: MetricEntry.from_summary(entry, reason=empty if entry["value"] == math.inf else None)
            for key, entry in entries.items()}


METRIC = Metric(
    name="modes",
    keys=(MetricKey("modes_covered", "modes covered", higher_is_better=True, bounds=(0.0, math.inf)),
          MetricKey("modes_covered_share", "modes with ≥ 1/5 share", higher_is_better=True, bounds=(0.0, math.inf)),
          MetricKey("high_quality_fraction", "high-quality fraction", higher_is_better=True, bounds=(0.0, 1.0)),
          MetricKey("mode_reverse_kl", "reverse KL over modes", unit="nats", higher_is_better=False, bounds=(0.0, math.inf))),
    needs=("samples", "mixture"),
    description="modes covered (any sample; >= 1/5 of the share), high-quality fraction and reverse KL over modes (reference with known mixture components)",
    reference="Srivastava et al. 2017 (VEEGAN), sec. 5.1; Lin et al. 2018 (PacGAN), sec. 4.1",
    compute=_compute,
)
