"""Kernel Inception Distance (KID; Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared MMD with the polynomial kernel
k(x, y) = (γ x·y + coef0)^degree, averaged over random equal-size subsets. The subset draws
reproduce torch-fidelity's ``kid_features_to_metric`` exactly, so results agree with it to
floating-point precision for the same seed and argument order.

Subsets are drawn by row index, so permuting the rows of either set changes the subsets and the
estimate (by its sampling error); identical inputs in the same order give identical values, e.g.
the same images read from a PNG folder or from an ``.npz``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from harness.core.device import math_device
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "kernel_inception_distance", "mmd2_unbiased_poly"]


def _as_matrix(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """``features`` [N, d] as a numpy array in its own float dtype (no upcast of the full set)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_samples, dim], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def _power(base: np.ndarray, degree: int) -> np.ndarray:
    """base ** degree by repeated in-place products for small integer degrees (numpy's pow is ~10x slower)."""
    if not isinstance(degree, int) or not 1 <= degree <= 8:
        return base**degree
    out = base.copy()
    for _ in range(degree - 1):
        out *= base
    return out


def mmd2_unbiased_poly(
    x: np.ndarray, y: np.ndarray, *, degree: int, gamma: float, coef0: float
) -> float:
    """Unbiased MMD² between equal-size samples x, y [m, d] (float64) with a polynomial kernel.

    Bińkowski et al. 2018, eq. 4: within-set kernel sums exclude the diagonal and are divided by
    m(m−1); the cross-set sum is divided by m².
    """
    m = x.shape[0]
    k_xx = _power(x @ x.T * gamma + coef0, degree)
    k_yy = _power(y @ y.T * gamma + coef0, degree)
    k_xy = _power(x @ y.T * gamma + coef0, degree)
    within = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features_1: np.ndarray | torch.Tensor,
    features_2: np.ndarray | torch.Tensor,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """KID mean and standard deviation (ddof=0) over ``num_subsets`` random subsets.

    Args:
        features_1: [N1, d]; by convention the GENERATED set (torch-fidelity's ``input1``). The
            order matters only through the random draws: each subset draws its indices into
            ``features_1`` first, then into ``features_2``.
        features_2: [N2, d]; by convention the REAL/reference set.
        num_subsets: number of subsets (torch-fidelity ``kid_subsets``).
        subset_size: samples m per subset, drawn without replacement (``kid_subset_size``).
        degree, gamma, coef0: polynomial kernel (γ x·y + coef0)^degree; γ defaults to 1/d.
        seed: seed of the local ``np.random.RandomState`` used for the draws (``rng_seed``).
        device: compute the kernels in float64 torch on this device (a GPU); the subsets are
            the same draws, the values agree with the numpy route (None) to float64 rounding.
    Returns:
        (mean, std) of the per-subset unbiased MMD² values, in squared feature units. Small
        negative values are valid and mean the two distributions are very close.
    Notes:
        Inputs stay in their dtype in memory; kernels are computed in float64: from the whole
        sets' kernel matrices when those are cheaper and fit in memory (:func:`_whole_kernels`:
        5,000 rows per set with 100 subsets of 1,000 take a quarter of the flops), else per
        subset. torch-fidelity computes kernels in the input dtype, so compare against it with
        float64 inputs for agreement beyond float32 precision.
    """
    x_all = _as_matrix(features_1, "features_1")
    y_all = _as_matrix(features_2, "features_2")
    if x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"feature dims differ: features_1 has {x_all.shape[1]}, features_2 has {y_all.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2 for the unbiased estimator, got {subset_size}")
    n1, n2 = x_all.shape[0], y_all.shape[0]
    if subset_size > min(n1, n2):
        raise ValueError(
            f"KID needs at least subset_size={subset_size} samples in each set, got "
            f"{n1} (features_1) and {n2} (features_2); lower `subset_size` to at most {min(n1, n2)}"
        )
    gamma = 1.0 / x_all.shape[1] if gamma is None else float(gamma)

    rng = np.random.RandomState(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    kernels = _whole_kernels(x_all, y_all, num_subsets, subset_size, degree, gamma, coef0) if device is None else None
    if kernels is not None:
        # subset s's kernel sums are m_sᵀ K m_s for its 0/1 indicator column m_s: all subsets in one product each
        k_xx, k_yy, k_xy = kernels
        in_x, in_y = np.zeros((n1, num_subsets)), np.zeros((n2, num_subsets))
        for i in range(num_subsets):
            in_x[rng.choice(n1, subset_size, replace=False), i] = 1.0
            in_y[rng.choice(n2, subset_size, replace=False), i] = 1.0
        m = subset_size
        within = (np.einsum("is,is->s", in_x, k_xx @ in_x) - np.diag(k_xx) @ in_x
                  + np.einsum("is,is->s", in_y, k_yy @ in_y) - np.diag(k_yy) @ in_y)
        values = within / (m * (m - 1)) - 2.0 * np.einsum("is,is->s", in_x, k_xy @ in_y) / (m * m)
        return float(values.mean()), float(values.std())
    if device is not None:
        x_dev, y_dev = torch.from_numpy(x_all).to(device), torch.from_numpy(y_all).to(device)
    for i in range(num_subsets):
        rows_x, rows_y = rng.choice(n1, subset_size, replace=False), rng.choice(n2, subset_size, replace=False)
        if device is not None:
            values[i] = _mmd2_unbiased_poly_torch(x_dev[torch.from_numpy(rows_x).to(device)].double(),
                                                  y_dev[torch.from_numpy(rows_y).to(device)].double(),
                                                  degree=degree, gamma=gamma, coef0=coef0)
            continue
        x = x_all[rows_x].astype(np.float64)
        y = y_all[rows_y].astype(np.float64)
        values[i] = mmd2_unbiased_poly(x, y, degree=degree, gamma=gamma, coef0=coef0)
    return float(values.mean()), float(values.std())


WHOLE_KERNEL_ENTRIES = 100_000_000
"""Most kernel entries (float64: 800 MB) that :func:`_whole_kernels` computes at once."""


def _whole_kernels(x: np.ndarray, y: np.ndarray, num_subsets: int, m: int, degree: int, gamma: float,
                   coef0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The kernel matrices of the whole sets, k(x_i, x_j) [N1, N1], [N2, N2], [N1, N2] float64, when
    they take fewer flops than the subsets' own (3·S·m² entries) and fit :data:`WHOLE_KERNEL_ENTRIES`;
    else None. Each subset's kernels are submatrices of these, so its MMD² is the same float64
    value up to summation order (~1e-15 relative)."""
    n1, n2 = x.shape[0], y.shape[0]
    entries = n1 * n1 + n2 * n2 + n1 * n2
    if entries > WHOLE_KERNEL_ENTRIES or entries >= 3 * num_subsets * m * m:
        return None
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    return (_power(xf @ xf.T * gamma + coef0, degree), _power(yf @ yf.T * gamma + coef0, degree),
            _power(xf @ yf.T * gamma + coef0, degree))


def _mmd2_unbiased_poly_torch(x: torch.Tensor, y: torch.Tensor, *, degree: int, gamma: float, coef0: float) -> float:
    """:func:`mmd2_unbiased_poly` in torch (float64 [m, d] tensors on any device)."""
    m = x.shape[0]
    k_xx = (x @ x.T * gamma + coef0).pow(degree)
    k_yy = (y @ y.T * gamma + coef0).pow(degree)
    k_xy = (x @ y.T * gamma + coef0).pow(degree)
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def _subset_size(inputs: MetricInputs, options: Any) -> int:
    return options.sample.kid_subset_size or min(1000, inputs.n_fake, inputs.n_real)


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    size = _subset_size(inputs, options)
    subsets = options.sample.kid_subsets
    mean, std = kernel_inception_distance(inputs.fake_features, inputs.real_features, num_subsets=subsets,
                                          subset_size=size, seed=inputs.seed, device=math_device(inputs.device))
    fields = {"estimator": "unbiased MMD², polynomial kernel (x·y/d + 1)^3", "subsets": subsets, "subset_size": size,
              "seed": inputs.seed, "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake,
              "n_reference": inputs.n_real}
    return {"kid_mean": MetricEntry(mean, fields), "kid_std": MetricEntry(std, fields)}


def _replicate_options(options: Any, inputs: MetricInputs, m: int, m_ref: int) -> Any:
    """The run's subset size capped at the half-sets; one subset when a subset is the whole of both
    half-sets (every subset would then give the same value)."""
    size = min(_subset_size(inputs, options), m, m_ref)
    subsets = 1 if size == m == m_ref else options.sample.kid_subsets
    return replace(options, sample=replace(options.sample, kid_subset_size=size, kid_subsets=subsets))


METRIC = Metric(
    name="kid",
    keys=(MetricKey("kid_mean", "KID", higher_is_better=False),
          MetricKey("kid_std", "KID std over subsets", gate="none", gate_reason="dispersion over KID subsets")),
    needs=("features",),
    description="unbiased MMD² with a cubic polynomial kernel over seeded subsets",
    reference="Bińkowski et al. 2018, eq. 4",
    compute=_compute,
    settings=("kid_subsets", "kid_subset_size"),
    uncertainty="half-sample",
    replicate_options=_replicate_options,
)
