"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Definitions are those of the ``prdc`` package (clovaai/generative-evaluation-prdc), with r_i the
distance from sample i to its k-th nearest neighbour in its own set (self excluded) and STRICT
``<`` membership:

    precision = mean_j [∃ i: d(real_i, fake_j) < r_real_i]
    recall    = mean_i [∃ j: d(real_i, fake_j) < r_fake_j]
    density   = (1/k) · mean_j Σ_i [d(real_i, fake_j) < r_real_i]          (Naeem et al. eq. 1)
    coverage  = mean_i [min_j d(real_i, fake_j) < r_real_i]                (Naeem et al. eq. 2)

Distances come from :mod:`metrics.knn`: float32 Gram tiles with rigorous error bounds decide
almost every ``<`` test, and the pairs within rounding of a radius (and each row's nearest-neighbour
candidates) get float64 reference distances computed pair by pair, so nothing is O(N²) in memory,
the four values are exactly invariant to permuting the rows of either set, and bitwise-identical
rows (exact copies of reference rows among the samples) are at distance exactly 0 and tie with
radii as in the reference. :func:`prdc_subsets` scores the half-sample replicates in the same
passes. For N = 50,000 per set and d = 2048 in float32 the footprint is the features (2 × 400 MB)
plus, at the default ``chunk_size=2048``, under 100 MB of tiles and neighbour lists.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from harness.core.device import math_device
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.knn import as_feature_tensor, knn_radii, neighbour_lists, radii_with_fallback, radius_tests, squared_norms

__all__ = ["METRIC", "compute_prdc", "compute_prdc_multi_k", "knn_radii", "prdc_subsets"]

Subset = tuple[np.ndarray | None, np.ndarray | None]


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
    return prdc_subsets(real_features, fake_features, [(None, None)], pr_k=pr_k, dc_k=dc_k, chunk_size=chunk_size,
                        device=device)[0]


def prdc_subsets(
    real_features: np.ndarray | torch.Tensor,
    fake_features: np.ndarray | torch.Tensor,
    subsets: list[Subset],
    *,
    pr_k: int = 3,
    dc_k: int = 5,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> list[dict[str, float]]:
    """:func:`compute_prdc_multi_k` of several row subsets of the two sets, sharing the distance work.

    Args:
        subsets: (generated rows, reference rows) per evaluation, int index arrays without repeats,
            None for all rows; e.g. the full sets and their half-sample replicates.
    Returns:
        one {"precision", "recall", "density", "coverage"} per subset, equal to
        ``compute_prdc_multi_k(real[ref rows], fake[rows])``.

    Cost: one upper-triangular screening pass per set (each row's nearest neighbours, with
    reference distances for its 2(k+1) + 28 best candidates when there are subsets, k + 9 without)
    and one real × fake screening pass in which every subset's four counts are accumulated;
    reference distances are computed only where a pair's interval straddles one of the radii.
    """
    real = as_feature_tensor(real_features, "real_features", device)
    fake = as_feature_tensor(fake_features, "fake_features", real.device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real has {real.shape[1]}, fake has {fake.shape[1]}")
    if min(pr_k, dc_k) < 1:
        raise ValueError(f"pr_k and dc_k must be >= 1, got pr_k={pr_k}, dc_k={dc_k}")
    if real.dtype != fake.dtype:
        real, fake = real.double(), fake.double()
    n_real, n_fake, dev = real.shape[0], fake.shape[0], real.device
    need_real, need_fake = max(pr_k, dc_k) + 1, pr_k + 1
    real_masks, fake_masks = [], []
    for rows, ref_rows in subsets:
        fm, rm = _mask(rows, n_fake, dev), _mask(ref_rows, n_real, dev)
        have_real, have_fake = int(rm.sum()), int(fm.sum())
        if have_real < need_real or have_fake < need_fake:
            raise ValueError(
                f"PRDC with pr_k={pr_k}, dc_k={dc_k} needs at least {need_real} real and {need_fake} fake "
                f"samples (k+1), got {have_real} real and {have_fake} fake"
            )
        real_masks.append(rm)
        fake_masks.append(fm)

    partial = any(rows is not None or ref_rows is not None for rows, ref_rows in subsets)
    k_max = max(pr_k, dc_k)
    real_lists = neighbour_lists(real, 2 * (k_max + 1) + 20 if partial else k_max + 1, chunk_size=chunk_size,
                                 desc="k-NN lists (reference)")
    fake_lists = neighbour_lists(fake, 2 * (pr_k + 1) + 20 if partial else pr_k + 1, chunk_size=chunk_size,
                                 desc="k-NN lists (generated)")
    real_sq, fake_sq = squared_norms(real), squared_norms(fake)
    full = [(rows is None and ref_rows is None) for rows, ref_rows in subsets]
    r_pr = torch.stack([radii_with_fallback(real, real_lists, pr_k, None if f else m, real_sq) for m, f in zip(real_masks, full)])
    r_dc = torch.stack([radii_with_fallback(real, real_lists, dc_k, None if f else m, real_sq) for m, f in zip(real_masks, full)])
    f_pr = torch.stack([radii_with_fallback(fake, fake_lists, pr_k, None if f else m, fake_sq) for m, f in zip(fake_masks, full)])
    counts = radius_tests(real, fake, r_pr, r_dc, f_pr, torch.stack(fake_masks), chunk_size)

    out = []
    for e, (rm, fm) in enumerate(zip(real_masks, fake_masks)):
        n_r, n_f = int(rm.sum()), int(fm.sum())
        out.append({
            "precision": int((counts["fake_in_real"][e] & fm).sum()) / n_f,
            "recall": int((counts["real_in_fake"][e] & rm).sum()) / n_r,
            "density": (int(counts["density"][e]) / n_f) / dc_k,
            "coverage": int((counts["covered"][e] & rm).sum()) / n_r,
        })
    return out


def _mask(rows: np.ndarray | None, n: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    if rows is None:
        mask[:] = True
        return mask
    index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ValueError(f"subset rows must lie in [0, {n}), got {int(index.min())}..{int(index.max())}")
    if len(torch.unique(index)) != len(index):
        raise ValueError("subset rows must not repeat (half-samples draw without replacement)")
    mask[index] = True
    return mask


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


def _entries(values: dict[str, float], pr_k: int, dc_k: int, feature_extractor: Any, n_fake: int, n_real: int
             ) -> dict[str, MetricEntry]:
    rule = "Naeem et al. 2020 definitions (prdc package), strict '<'"
    common = {"feature_extractor": feature_extractor, "n_samples": n_fake, "n_reference": n_real}
    return {key: MetricEntry(float(values[key]), {"nearest_k": k, "estimator": rule, **common})
            for key, k in (("precision", pr_k), ("recall", pr_k), ("density", dc_k), ("coverage", dc_k))}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    return _compute_replicated(inputs, options, [])[0]


def _compute_replicated(inputs: MetricInputs, options: Any, halves: list[Subset]
                        ) -> tuple[dict[str, MetricEntry], list[dict[str, MetricEntry]]]:
    """The run's entries and each half-sample's, from one set of distance passes (:func:`prdc_subsets`)."""
    pr_k, dc_k = options.sample.pr_nearest_k, options.sample.dc_nearest_k
    found = prdc_subsets(inputs.real_features, inputs.fake_features, [(None, None), *halves], pr_k=pr_k, dc_k=dc_k,
                         device=math_device(inputs.device))
    sizes = [(inputs.n_fake, inputs.n_real)] + [(len(rows), len(ref_rows)) for rows, ref_rows in halves]
    entries = [_entries(v, pr_k, dc_k, inputs.feature_extractor, n, n_ref) for v, (n, n_ref) in zip(found, sizes)]
    return entries[0], entries[1:]


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
    compute_replicated=_compute_replicated,
    settings=("pr_nearest_k", "dc_nearest_k"),
    min_samples=lambda options: max(options.sample.pr_nearest_k, options.sample.dc_nearest_k) + 1,
    uncertainty="half-sample",
)
