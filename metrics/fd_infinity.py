"""FD∞: the Fréchet distance extrapolated to infinitely many generated samples (Chong & Forsyth 2020).

FID computed from N generated samples is biased upwards by a term that shrinks like 1/N, so
values at different N are not comparable. Chong & Forsyth (2020, sec. 3.1) compute FID_N at 15
values of N evenly spaced from 5,000 to 50,000 and fit FID_N = FD∞ + b / N by least squares; the
intercept FD∞ is the effectively unbiased estimate. Here the N_j are 15 values evenly spaced from
n/10 to n (the paper's ratio) for n generated rows; each FID_N uses a seeded random subset of N
generated rows (without replacement) against the full reference statistics.

The value is an extrapolation: its record holds the 15 (N, FD_N) points, the slope b, the fit's
residual (root mean square, ``fit_residual_rms``) and the least squares standard error of the
intercept (``fit_stderr``, from the residuals; not a sampling spread).
Cost: 15 covariances of up to n rows and 15 Fréchet distances (O(15 (n d² + d³))).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.fid import GaussianStats, feature_space_label, frechet_distance

__all__ = ["METRIC", "POINTS", "fd_infinity"]

POINTS = 15
MIN_FRACTION = 0.1


def fd_infinity(fake: np.ndarray, real_mean: np.ndarray, real_cov: np.ndarray, *, seed: int, points: int = POINTS,
                min_fraction: float = MIN_FRACTION) -> dict[str, Any]:
    """FD∞ of generated rows ``fake`` [n, d] against N(real_mean, real_cov) (Chong & Forsyth 2020, sec. 3.1).

    Returns {"value", "ns", "fd_values", "slope", "fit_stderr", "fit_residual_rms"}; the N are ``points`` integers evenly
    spaced from ``min_fraction`` · n to n (at least 2 rows, distinct).
    """
    x = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    n = len(x)
    ns = sorted({int(round(v)) for v in np.linspace(max(2, min_fraction * n), n, points)})
    if len(ns) < 3:
        raise ValueError(f"FD-infinity needs at least 3 distinct sample counts; {n} generated rows give {ns}")
    rng = np.random.default_rng(seed)
    fds = []
    for size in ns:
        rows = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
        fit = GaussianStats().update(x[torch.from_numpy(rows)])
        fds.append(frechet_distance(fit.mean, fit.cov, real_mean, real_cov))
    design = np.stack([np.ones(len(ns)), 1.0 / np.asarray(ns, dtype=np.float64)], axis=1)
    coef, residual, *_ = np.linalg.lstsq(design, np.asarray(fds), rcond=None)
    dof = len(ns) - 2
    sigma2 = float(residual[0]) / dof if len(residual) and dof > 0 else 0.0
    stderr = math.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0])
    return {"value": float(coef[0]), "ns": ns, "fd_values": [float(v) for v in fds], "slope": float(coef[1]),
            "fit_stderr": stderr, "fit_residual_rms": math.sqrt(float(residual[0]) / len(ns)) if len(residual) else 0.0}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    if inputs.real_stats is not None:
        real_mean, real_cov = inputs.real_stats
    else:
        stats = GaussianStats().update(np.asarray(inputs.real_features))
        real_mean, real_cov = stats.mean, stats.cov
    fit = fd_infinity(inputs.fake_features, real_mean, real_cov, seed=inputs.seed)
    return {"fd_inf": MetricEntry(fit.pop("value"), {
        **fit, "label": f"{feature_space_label(inputs.feature_extractor)}∞",
        "estimator": f"least squares FD_N = FD_inf + b/N over {POINTS} N evenly spaced from n/10 to n, seeded subsets",
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real,
    })}


METRIC = Metric(
    name="fd_inf",
    keys=(MetricKey("fd_inf", "FD∞", higher_is_better=False, gate="none",
                    gate_reason="an extrapolation from 15 FDs; its fit stderr is not a sampling spread",
                    measured=frozenset({"ns", "fd_values", "slope", "fit_stderr", "fit_residual_rms"})),),
    needs=("features",),
    description="FD extrapolated to infinite samples: intercept of FD_N vs 1/N over 15 N from n/10 to n (runs when asked for)",
    reference="Chong & Forsyth 2020, sec. 3.1",
    compute=_compute,
    min_samples=lambda options: 30,
    uncertainty="none",
    default=False,
    uses_gaussian_fit=True,
    reference_use="statistics",
)
