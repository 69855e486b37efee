"""Tiled exact Euclidean distances and k-nearest-neighbour radii, never materialising N×N.

Distances follow scikit-learn's ``euclidean_distances`` (which the ``prdc`` package uses):
d² = ||x||² − 2 x·y + ||y||² evaluated in float64 on float64 copies of each tile, clamped at 0,
rounded to the working dtype (float32 for float32 input) and square-rooted in that dtype. Doing
the expansion in float64 avoids the cancellation of float32 matrix-multiply distances, which
flips strict ``<`` neighbourhood tests; rounding like scikit-learn afterwards keeps ties and
near-ties resolved the same way as the reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["as_feature_tensor", "distance_tiles", "knn_radii", "knn_radii_multi"]


def as_feature_tensor(
    features: np.ndarray | torch.Tensor, name: str, device: str | torch.device | None = None
) -> torch.Tensor:
    """Validate ``features`` [N, d] and return a float32/float64 tensor (float32 input kept as-is).

    Non-float64 dtypes are converted to float32; numpy input goes to the CPU unless ``device``
    is given; a tensor stays on its device unless ``device`` is given.
    """
    tensor = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_samples, dim], got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    if device is not None:
        tensor = tensor.to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return tensor.detach()


def _squared_norms(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Row-wise ||x||² [N] in float64, upcasting one chunk at a time."""
    return torch.cat([x[i : i + chunk_size].double().square().sum(1) for i in range(0, x.shape[0], chunk_size)])


def distance_tiles(
    x: torch.Tensor, y: torch.Tensor, chunk_size: int, *, same: bool = False
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield ``(rows, cols, D)`` covering the [N_x, N_y] Euclidean distance matrix tile by tile.

    Args:
        x: [N_x, d]; y: [N_y, d]; same dtype (float32 or float64) and device.
        chunk_size: tile side; each tile D is [≤chunk_size, ≤chunk_size] in x's dtype.
        same: x and y are the same set; the self-distances D[i, i] are set to exactly 0.
    Memory: two float64 [chunk_size, d] copies plus a float64 [chunk_size, chunk_size] Gram tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    x_sq, y_sq = _squared_norms(x, chunk_size), _squared_norms(y, chunk_size)
    for r0 in range(0, x.shape[0], chunk_size):
        rows = slice(r0, min(r0 + chunk_size, x.shape[0]))
        x_tile = x[rows].double()
        for c0 in range(0, y.shape[0], chunk_size):
            cols = slice(c0, min(c0 + chunk_size, y.shape[0]))
            sq = x_tile @ y[cols].double().T
            sq.mul_(-2.0).add_(x_sq[rows, None]).add_(y_sq[None, cols])
            dist = sq.to(x.dtype).clamp_min_(0.0).sqrt_()
            if same:
                lo, hi = max(rows.start, cols.start), min(rows.stop, cols.stop)
                if lo < hi:
                    idx = torch.arange(lo, hi, device=dist.device)
                    dist[idx - rows.start, idx - cols.start] = 0.0
            yield rows, cols, dist


def knn_radii_multi(
    features: np.ndarray | torch.Tensor, ks: Sequence[int], *, chunk_size: int = 2048
) -> dict[int, torch.Tensor]:
    """Distance from each point to its k-th nearest neighbour, excluding itself, for every k in ks.

    Args:
        features: [N, d] numpy array or tensor, validated by :func:`as_feature_tensor`.
        ks: neighbourhood sizes, each in [1, N−1].
    Returns:
        {k: radii [N]} in the features' dtype and units — the (k+1)-th smallest distance of each
        row including the zero self-distance, as ``prdc``'s ``get_kth_value(d, k + 1)``.
    """
    features = as_feature_tensor(features, "features")
    n = features.shape[0]
    k_max = max(ks)
    if min(ks) < 1 or k_max > n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {sorted(ks)}; a set needs at least k+1 samples")
    radii = {k: torch.empty(n, dtype=features.dtype, device=features.device) for k in ks}
    best: torch.Tensor | None = None
    for rows, cols, dist in distance_tiles(features, features, chunk_size, same=True):
        candidates = dist if cols.start == 0 else torch.cat([best, dist], dim=1)
        best = candidates.topk(min(k_max + 1, candidates.shape[1]), dim=1, largest=False, sorted=True).values
        if cols.stop == n:
            for k in ks:
                radii[k][rows] = best[:, k]
    return radii


def knn_radii(features: np.ndarray | torch.Tensor, k: int, *, chunk_size: int = 2048) -> torch.Tensor:
    """Radii [N]: distance of each row of ``features`` [N, d] to its k-th nearest other row."""
    return knn_radii_multi(features, (k,), chunk_size=chunk_size)[k]
