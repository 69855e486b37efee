"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Definitions are those of the ``prdc`` package (clovaai/generative-evaluation-prdc), with r_i the
distance from sample i to its k-th nearest neighbour in its own set (self excluded) and STRICT
``<`` membership:

    precision = mean_j [∃ i: d(real_i, fake_j) < r_real_i]
    recall    = mean_i [∃ j: d(real_i, fake_j) < r_fake_j]
    density   = (1/k) · mean_j Σ_i [d(real_i, fake_j) < r_real_i]          (Naeem et al. eq. 1)
    coverage  = mean_i [min_j d(real_i, fake_j) < r_real_i]                (Naeem et al. eq. 2)

Distances are computed tile by tile (see :mod:`metrics.knn`), so nothing is O(N²) in memory.
A pair's distance does not depend on its position in the tiling and bitwise-identical rows are at
distance exactly 0, so the four values are exactly invariant to permuting the rows of either set,
also when samples are exact copies of reference rows (which then tie with radii).
For N = 50,000 per set and d = 2048 in float32 the footprint is the features (2 × 400 MB) plus,
at the default ``chunk_size=2048``, about 100 MB of tiles (two float64 [2048, 2048] feature
copies, one float64 [2048, 2048] Gram tile and its float32 distances) and O(N) accumulators.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.knn import as_feature_tensor, distance_tiles, even_tile, knn_radii, row_ids, tile_knn_radii

__all__ = ["METRIC", "compute_prdc", "compute_prdc_multi_k", "knn_radii"]


def compute_prdc_multi_k(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    *,
    pr_k: int = 3,
    dc_k: int = 5,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Precision/recall with ``pr_k`` neighbours and density/coverage with ``dc_k``, in one pass.

    Args:
        real_features: [N_real, d]; float32 is kept as float32, float64 as float64.
        fake_features: [N_fake, d] (generated samples).
        pr_k: neighbourhood size for precision and recall (the harness default 3, as torch-fidelity
            and StyleGAN2-ADA ``pr50k3``).
        dc_k: neighbourhood size for density and coverage (5, as Naeem et al.).
        chunk_size: largest tile side for the distance computation (memory/speed trade-off only;
            see :func:`metrics.knn.even_tile`).
        device: where to compute; default: the real features' device (CPU for numpy).
    Returns:
        {"precision", "recall", "density", "coverage"} as floats; density lies in [0, N_real/dc_k],
        the others in [0, 1].
    Raises:
        ValueError: for non-2-D or non-finite inputs, mismatched d, or too few samples
            (real needs max(pr_k, dc_k)+1, fake needs pr_k+1).
    """
    real = as_feature_tensor(real_features, "real_features", device)
    fake = as_feature_tensor(fake_features, "fake_features", real.device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real has {real.shape[1]}, fake has {fake.shape[1]}")
    if min(pr_k, dc_k) < 1:
        raise ValueError(f"pr_k and dc_k must be >= 1, got pr_k={pr_k}, dc_k={dc_k}")
    need_real, need_fake = max(pr_k, dc_k) + 1, pr_k + 1
    if real.shape[0] < need_real or fake.shape[0] < need_fake:
        raise ValueError(
            f"PRDC with pr_k={pr_k}, dc_k={dc_k} needs at least {need_real} real and {need_fake} fake "
            f"samples (k+1), got {real.shape[0]} real and {fake.shape[0]} fake"
        )
    if real.dtype != fake.dtype:
        real, fake = real.double(), fake.double()

    # One tile shape and one id space for all three distance passes: a pair of rows gets the
    # same distance in each, and bitwise-identical rows within or across the sets get exactly 0.
    tile = even_tile(max(real.shape[0], fake.shape[0]), chunk_size)
    real_ids, fake_ids = row_ids(real, fake)
    real_radii = tile_knn_radii(real, (pr_k, dc_k), tile, real_ids)
    real_r_pr, real_r_dc = real_radii[pr_k], real_radii[dc_k]
    fake_r_pr = tile_knn_radii(fake, (pr_k,), tile, fake_ids)[pr_k]

    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)
    fake_count = torch.zeros(fake.shape[0], dtype=torch.int64, device=real.device)
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    real_min = torch.full((real.shape[0],), float("inf"), dtype=real.dtype, device=real.device)
    for rows, cols, dist in distance_tiles(real, fake, tile, ids=(real_ids, fake_ids)):
        fake_in_real[cols] |= (dist < real_r_pr[rows, None]).any(dim=0)
        fake_count[cols] += (dist < real_r_dc[rows, None]).sum(dim=0)
        real_in_fake[rows] |= (dist < fake_r_pr[None, cols]).any(dim=1)
        real_min[rows] = torch.minimum(real_min[rows], dist.amin(dim=1))

    return {
        "precision": float(fake_in_real.double().mean()),
        "recall": float(real_in_fake.double().mean()),
        "density": float(fake_count.double().mean()) / dc_k,
        "coverage": float((real_min < real_r_dc).double().mean()),
    }


def compute_prdc(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    *,
    nearest_k: int = 5,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """``prdc.compute_prdc`` semantics: all four metrics with the same ``nearest_k``.

    See :func:`compute_prdc_multi_k` for arguments, memory bound and return value.
    """
    return compute_prdc_multi_k(
        real_features, fake_features, pr_k=nearest_k, dc_k=nearest_k, chunk_size=chunk_size, device=device
    )


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    pr_k, dc_k = options.sample.pr_nearest_k, options.sample.dc_nearest_k
    both = compute_prdc_multi_k(inputs.real_features, inputs.fake_features, pr_k=pr_k, dc_k=dc_k)
    rule = "Naeem et al. 2020 definitions (prdc package), strict '<'"
    common = {"feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real}
    return {key: MetricEntry(float(both[key]), {"nearest_k": k, "estimator": rule, **common})
            for key, k in (("precision", pr_k), ("recall", pr_k), ("density", dc_k), ("coverage", dc_k))}


def _one_sample(count_field: str, per_k: bool):
    """A k-NN fraction moves in whole samples: 1/n (1/(k·n) for density)."""
    def step(entry: Mapping[str, Any]) -> float:
        n = entry.get(count_field)
        k = entry.get("nearest_k") if per_k else 1
        return 1.0 / (n * k) if isinstance(n, int) and n > 0 and isinstance(k, int) and k > 0 else 0.0
    return step


METRIC = Metric(
    name="prdc",
    keys=(MetricKey("precision", "precision", higher_is_better=True, bounds=(0.0, 1.0), resolution=_one_sample("n_samples", False)),
          MetricKey("recall", "recall", higher_is_better=True, bounds=(0.0, 1.0), resolution=_one_sample("n_reference", False)),
          MetricKey("density", "density", higher_is_better=True, bounds=(0.0, math.inf), resolution=_one_sample("n_samples", True)),
          MetricKey("coverage", "coverage", higher_is_better=True, bounds=(0.0, 1.0), resolution=_one_sample("n_reference", False))),
    needs=("features",),
    description="k-NN precision/recall (k=3) and density/coverage (k=5)",
    reference="Kynkäänniemi et al. 2019; Naeem et al. 2020",
    compute=_compute,
    settings=("pr_nearest_k", "dc_nearest_k"),
    min_samples=lambda options: max(options.sample.pr_nearest_k, options.sample.dc_nearest_k) + 1,
    uncertainty="half-sample",
)
