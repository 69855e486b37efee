"""Squared maximum mean discrepancy with a multi-scale Gaussian kernel (Gretton et al. 2012).

For X ~ P (n rows) and Y ~ Q (m rows) and a characteristic kernel k,

    MMD²(P, Q) = E k(X, X') + E k(Y, Y') − 2 E k(X, Y)                 (Gretton et al. 2012, Lemma 6)

estimated without bias by the U-statistic (their eq. 3): the within-set means over distinct pairs
i ≠ j, the between-set mean over all n·m pairs. It may be slightly negative when P = Q; it is 0
in expectation then, and > 0 for any P ≠ Q (the Gaussian kernel is characteristic).

The kernel is the mean of Gaussian kernels exp(−‖x − y‖² / (2σ_b²)) over the bandwidths
σ_b = σ₀ · s_b, s_b ∈ ``BANDWIDTH_SCALES`` (1, 1/4, 1/16, 1/64), so the metric sees structure from
the scale of the whole set down to 1/64 of it: on the 8-Gaussians ring (radius 2, σ = 0.02) the
finest bandwidths resolve single modes, which a Fréchet distance of the first two moments cannot.
σ₀ is ``mmd_bandwidth`` when given, else the median distance between reference rows (the median
heuristic, Gretton et al. 2012, sec. 8), computed on at most ``MEDIAN_ROWS`` rows chosen by the
run seed; the bandwidths used are recorded, and the half-sample replicates reuse them.

Kernel sums run in float64 tiles of ``TILE_ROWS`` × m rows: memory O(TILE_ROWS · m), time
O((n + m)² d).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["BANDWIDTH_SCALES", "METRIC", "gaussian_kernel_sum", "median_distance", "mmd2_unbiased"]

BANDWIDTH_SCALES = (1.0, 0.25, 0.0625, 0.015625)
MEDIAN_ROWS = 2000
TILE_ROWS = 1024


def median_distance(x: np.ndarray, *, seed: int, max_rows: int = MEDIAN_ROWS) -> float:
    """Median Euclidean distance over distinct pairs of at most ``max_rows`` rows of x [n, d]."""
    a = np.asarray(x, dtype=np.float64)
    if len(a) > max_rows:
        a = a[np.sort(np.random.default_rng(seed).choice(len(a), max_rows, replace=False))]
    t = torch.as_tensor(a)
    d = torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist")
    upper = d[torch.triu_indices(len(a), len(a), offset=1).unbind()]
    median = float(upper.median()) if len(upper) else 0.0
    if not median > 0:
        raise ValueError("the median distance between reference rows is 0 (all rows equal); give mmd_bandwidth")
    return median


def gaussian_kernel_sum(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...], *, same: bool) -> float:
    """Σ_{i,j} k(a_i, b_j) (over i ≠ j when ``same``) for the mean-of-Gaussians kernel."""
    inv = torch.tensor([-0.5 / s**2 for s in bandwidths], dtype=torch.float64)
    total = 0.0
    for lo in range(0, len(a), TILE_ROWS):
        sq = torch.cdist(a[lo : lo + TILE_ROWS], b, compute_mode="donot_use_mm_for_euclid_dist").square()
        total += float(torch.exp(sq[..., None] * inv).mean(-1).sum())
    if same:
        total -= len(a)  # the diagonal: k(x, x) = 1
    return total


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidths: tuple[float, ...]) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) between rows x [n, d] and y [m, d] (n, m >= 2)."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"rows must be [n, d] and [m, d] with the same d and n, m >= 2, got {list(a.shape)} and {list(b.shape)}")
    if not bandwidths or not all(s > 0 for s in bandwidths):
        raise ValueError(f"bandwidths must be positive, got {bandwidths}")
    n, m = len(a), len(b)
    kxx = gaussian_kernel_sum(a, a, bandwidths, same=True) / (n * (n - 1))
    kyy = gaussian_kernel_sum(b, b, bandwidths, same=True) / (m * (m - 1))
    kxy = gaussian_kernel_sum(a, b, bandwidths, same=False) / (n * m)
    return kxx + kyy - 2.0 * kxy


def _base(inputs: MetricInputs, options: Any) -> float:
    given = options.sample.mmd_bandwidth
    return float(given) if given is not None else median_distance(inputs.real_features, seed=inputs.seed)


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    base = _base(inputs, options)
    bandwidths = tuple(base * s for s in BANDWIDTH_SCALES)
    value = mmd2_unbiased(inputs.fake_features, inputs.real_features, bandwidths)
    return {"mmd2": MetricEntry(value, {
        "estimator": "unbiased U-statistic (Gretton et al. 2012, eq. 3)",
        "kernel": "mean of exp(-||x-y||^2 / (2 s^2)) over the bandwidths",
        "bandwidths": [float(f"{s:.6g}") for s in bandwidths],
        "bandwidth_base": "mmd_bandwidth" if options.sample.mmd_bandwidth is not None else "median distance of reference rows",
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real,
    })}


def _replicate_options(options: Any, inputs: MetricInputs, m: int, m_ref: int) -> Any:
    """Replicates use the full run's bandwidths, so their spread is that of one estimator."""
    sample = dataclasses.replace(options.sample, mmd_bandwidth=_base(inputs, options))
    return dataclasses.replace(options, sample=sample)


METRIC = Metric(
    name="mmd",
    keys=(MetricKey("mmd2", "MMD² (Gaussian kernels)", higher_is_better=False),),
    needs=("features",),
    description="unbiased MMD² with a mean of Gaussian kernels at 4 bandwidths (median heuristic x 1, 1/4, 1/16, 1/64)",
    reference="Gretton et al. 2012, eq. 3",
    compute=_compute,
    settings=("mmd_bandwidth",),
    uncertainty="half-sample",
    default=False,
    replicate_options=_replicate_options,
)
