"""CMMD: squared MMD with a Gaussian RBF kernel of bandwidth σ = 10, scaled by 1,000 (Jayasumana et al. 2024).

For feature sets X (generated, n rows) and Y (reference, m rows),

    CMMD = 1000 · [ mean_{i,j} k(x_i, x_j) + mean_{i,j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j) ],
    k(a, b) = exp(−‖a − b‖² / (2σ²)),  σ = 10,

with every mean over *all* pairs, the diagonal included: the estimator of the reference code
(google-research ``cmmd/distance.py``), which the paper calls the minimum-variance one; it is
biased (≥ 0, exactly 0 for identical sets). The paper defines CMMD on CLIP ViT-L/14@336 image
embeddings; in any other feature space the value is an MMD in that space (the record names the
extractor), not comparable with published CMMD.

Kernel sums are MMD's (``metrics.mmd.gaussian_kernel_sum``, float64 tiles): time O((n + m)² d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.mmd import gaussian_kernel_sum

__all__ = ["METRIC", "SCALE", "SIGMA", "cmmd"]

SIGMA = 10.0
SCALE = 1000.0


def cmmd(x: np.ndarray, y: np.ndarray, *, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """CMMD between rows x [n, d] and y [m, d] (Jayasumana et al. 2024; the reference's biased estimator)."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"rows must be [n, d] and [m, d] with the same d, got {list(a.shape)} and {list(b.shape)}")
    def mean(u: torch.Tensor, v: torch.Tensor) -> float:  # over all pairs, the diagonal included
        return gaussian_kernel_sum(u, v, (sigma,), same=False) / (len(u) * len(v))

    return scale * (mean(a, a) + mean(b, b) - 2.0 * mean(a, b))


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    value = cmmd(inputs.fake_features, inputs.real_features)
    return {"cmmd": MetricEntry(value, {
        "estimator": "biased: means over all pairs, diagonal included (the reference code, google-research cmmd)",
        "kernel": "exp(-||x-y||^2 / (2 sigma^2))", "sigma": SIGMA, "scale": SCALE,
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real,
    })}


METRIC = Metric(
    name="cmmd",
    keys=(MetricKey("cmmd", "CMMD (RBF σ=10, ×1000)", higher_is_better=False, bounds=(0.0, 2.0 * SCALE)),),
    needs=("features",),
    description="CMMD: Gaussian-RBF MMD² (sigma 10) x 1000, the reference's biased estimator; published values are in CLIP space",
    reference="Jayasumana et al. 2024, sec. 4",
    compute=_compute,
    uncertainty="half-sample",
    default=False,
)
