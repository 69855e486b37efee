"""Tiled exact Euclidean distances and k-nearest-neighbour radii, never materialising N×N.

Distances follow scikit-learn's ``euclidean_distances`` (which the ``prdc`` package uses):
d² = (||x||² + ||y||²) − 2 x·y evaluated in float64 on float64 copies of each tile, clamped at 0,
rounded to the working dtype (float32 for float32 input) and square-rooted in that dtype. Doing
the expansion in float64 avoids the cancellation of float32 matrix-multiply distances, which
flips strict ``<`` neighbourhood tests; rounding like scikit-learn afterwards keeps ties and
near-ties resolved the same way as the reference.

A pair's distance does not depend on where the pair sits, so the k-NN metrics do not change when
the rows of either set are permuted, and an exact copy lies exactly on the k-NN radius it ties:

* bitwise-identical rows (given the same row id, see :func:`row_ids`) get exactly 0; the
  expansion leaves a residue of ~1e-6 there (x·x from the matrix product and ||x||² summed
  differently) which, unlike for distinct rows, float32 rounding does not absorb;
* every matrix product is [chunk_size, d] × [d, chunk_size]: partial tiles are zero-padded,
  because BLAS rounds x·y differently for different tile shapes (MKL: the last ulp of x·y
  changes with the tile's row count);
* ||x||² + ||y||² is added before −2 x·y, so d(x, y) and d(y, x) round the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from harness.core.heartbeat import progress

__all__ = ["as_feature_tensor", "distance_tiles", "even_tile", "knn_radii", "knn_radii_multi", "nearest_rows",
           "row_ids", "tile_knn_radii"]


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


def row_ids(*sets: torch.Tensor) -> list[torch.Tensor]:
    """Shared content ids: int64 [N_s] per set [N_s, d], equal exactly when two rows are bitwise equal.

    Rows are told apart by a 128-bit BLAKE2b digest of their bytes (on a CPU copy; ~1 s per 50,000
    rows of 2048 float32), so ids do not depend on row order, tiling or device.
    """
    ids: dict[bytes, int] = {}
    out = []
    for x in sets:
        rows = np.ascontiguousarray(x.detach().cpu().numpy())
        found = [ids.setdefault(hashlib.blake2b(row, digest_size=16).digest(), len(ids)) for row in rows]
        out.append(torch.tensor(found, dtype=torch.int64, device=x.device))
    return out


def even_tile(n: int, chunk_size: int) -> int:
    """Tile side ≤ chunk_size that covers n rows in as few tiles as chunk_size does, with < 1 row of
    padding per tile (4500 rows at 2048: three tiles of 1500, not 2048 + 2048 + 404 padded to 2048)."""
    return -(-n // -(-n // chunk_size))


def _padded(x: torch.Tensor, rows: slice, chunk_size: int) -> torch.Tensor:
    """float64 copy of x[rows] [n, d], zero-padded to [chunk_size, d] (one product shape for every tile)."""
    tile = x[rows].double()
    if tile.shape[0] < chunk_size:
        tile = torch.cat([tile, tile.new_zeros(chunk_size - tile.shape[0], tile.shape[1])])
    return tile


def _squared_norms(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Row-wise ||x||² [N] in float64, upcasting one zero-padded [chunk_size, d] chunk at a time."""
    n = x.shape[0]
    return torch.cat([_padded(x, slice(i, min(i + chunk_size, n)), chunk_size).square().sum(1)[: min(chunk_size, n - i)]
                      for i in range(0, n, chunk_size)])


def distance_tiles(
    x: torch.Tensor, y: torch.Tensor, chunk_size: int, *, ids: tuple[torch.Tensor, torch.Tensor] | None = None
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield ``(rows, cols, D)`` covering the [N_x, N_y] Euclidean distance matrix tile by tile.

    Args:
        x: [N_x, d]; y: [N_y, d]; same dtype (float32 or float64) and device.
        chunk_size: tile side; each tile D is [≤chunk_size, ≤chunk_size] in x's dtype, computed as
            a zero-padded [chunk_size, chunk_size] product whatever N_x and N_y.
        ids: (x_ids [N_x], y_ids [N_y]) from :func:`row_ids`; pairs with equal ids get exactly 0.
    Memory: two float64 [chunk_size, d] copies plus a float64 [chunk_size, chunk_size] Gram tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    x_sq, y_sq = _squared_norms(x, chunk_size), _squared_norms(y, chunk_size)
    row_starts = range(0, x.shape[0], chunk_size)
    # a progress line every 30 s in logs (harness.core.heartbeat): a 50,000-row pass takes minutes
    for r0 in progress(row_starts, total=len(row_starts), desc=f"k-NN distances {x.shape[0]} x {y.shape[0]}",
                       unit="row tile"):
        rows = slice(r0, min(r0 + chunk_size, x.shape[0]))
        x_tile = _padded(x, rows, chunk_size)
        for c0 in range(0, y.shape[0], chunk_size):
            cols = slice(c0, min(c0 + chunk_size, y.shape[0]))
            dot = (x_tile @ _padded(y, cols, chunk_size).T)[: rows.stop - rows.start, : cols.stop - cols.start]
            sq = (x_sq[rows, None] + y_sq[None, cols]).sub_(dot.mul_(2.0))
            dist = sq.to(x.dtype).clamp_min_(0.0).sqrt_()
            if ids is not None:
                dist.masked_fill_(ids[0][rows, None] == ids[1][None, cols], 0.0)
            yield rows, cols, dist


def knn_radii_multi(
    features: np.ndarray | torch.Tensor, ks: Sequence[int], *, chunk_size: int = 2048
) -> dict[int, torch.Tensor]:
    """Distance from each point to its k-th nearest neighbour, excluding itself, for every k in ks.

    Args:
        features: [N, d] numpy array or tensor, validated by :func:`as_feature_tensor`.
        ks: neighbourhood sizes, each in [1, N−1].
        chunk_size: largest tile side (see :func:`even_tile`).
    Returns:
        {k: radii [N]} in the features' dtype and units — the (k+1)-th smallest distance of each
        row including the zero self-distance, as ``prdc``'s ``get_kth_value(d, k + 1)``; a row
        with k or more bitwise-identical copies has radius exactly 0.
    """
    features = as_feature_tensor(features, "features")
    n = features.shape[0]
    if min(ks) < 1 or max(ks) > n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {sorted(ks)}; a set needs at least k+1 samples")
    (ids,) = row_ids(features)
    return tile_knn_radii(features, ks, even_tile(n, chunk_size), ids)


def tile_knn_radii(features: torch.Tensor, ks: Sequence[int], chunk_size: int, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """:func:`knn_radii_multi` on a validated tensor [N, d] with its row ids [N], tiles of exactly ``chunk_size``."""
    n, k_max = features.shape[0], max(ks)
    radii = {k: torch.empty(n, dtype=features.dtype, device=features.device) for k in ks}
    best: torch.Tensor | None = None
    for rows, cols, dist in distance_tiles(features, features, chunk_size, ids=(ids, ids)):
        candidates = dist if cols.start == 0 else torch.cat([best, dist], dim=1)
        best = candidates.topk(min(k_max + 1, candidates.shape[1]), dim=1, largest=False, sorted=True).values
        if cols.stop == n:
            for k in ks:
                radii[k][rows] = best[:, k]
    return radii


def knn_radii(features: np.ndarray | torch.Tensor, k: int, *, chunk_size: int = 2048) -> torch.Tensor:
    """Radii [N]: distance of each row of ``features`` [N, d] to its k-th nearest other row."""
    return knn_radii_multi(features, (k,), chunk_size=chunk_size)[k]


def nearest_rows(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [N_x], index [N_x]) of each row of x [N_x, d] to its nearest row of y [N_y, d],
    exact (``torch.cdist`` without the matrix-multiply expansion) in x's dtype, ``chunk`` rows at a time."""
    found = [torch.cdist(x[lo : lo + chunk], y, compute_mode="donot_use_mm_for_euclid_dist").min(1)
             for lo in range(0, len(x), chunk)]
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])
