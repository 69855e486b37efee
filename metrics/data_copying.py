"""The C_T data-copying test (Meehan, Chaudhuri & Dasgupta 2020).

A model copies its training set T when its samples Q_m lie closer to T than fresh data P_n (the
held-out reference) does. T's features are split into ``CELLS`` k-means cells; in every cell π
holding at least ``MIN_PER_CELL`` generated and held-out rows, the distances of the held-out rows
to their nearest training row, L(P_π), are compared with those of the generated rows, L(Q_π), by
the Mann-Whitney U test in its normal approximation,

    Z_U(π) = (U − m n / 2) / sqrt(m n (m + n + 1) / 12),   U = Σ_{i,j} [L(Q)_j > L(P)_i] (+½ for ties)

(negative when generated rows are closer to T), and

    C_T = Σ_π P_n(π) Z_U(π) / Σ_π P_n(π)                          (Meehan et al. 2020, eq. 3)

over those cells. C_T ≪ 0 (the authors flag C_T < −3) says data-copying; ≈ 0 is what fresh
samples give; ≫ 0 is under-fitting. Per-cell Z values are recorded. The k-means is the PRD
metric's (``metrics.prd.kmeans``); nearest-neighbour distances are exact (``metrics.knn.nearest_rows``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.knn import nearest_rows

__all__ = ["METRIC", "ct_statistic"]

CELLS = 20
MIN_PER_CELL = 20
COPYING_THRESHOLD = -3.0


def _mann_whitney_z(held_out: np.ndarray, generated: np.ndarray) -> float:
    """Z of U = #{(i, j): generated_j > held_out_i} (+½ per tie) under the null, normal approximation."""
    from scipy.stats import rankdata

    n, m = len(held_out), len(generated)
    u = rankdata(np.concatenate([held_out, generated]))[n:].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def ct_statistic(generated: np.ndarray, held_out: np.ndarray, train: np.ndarray, *, seed: int, cells: int = CELLS,
                 min_per_cell: int = MIN_PER_CELL) -> dict[str, Any]:
    """C_T of generated [m, d] against held-out [n, d] data, with cells from train [t, d] (Meehan et al. 2020)."""
    from metrics.prd import kmeans

    q, p, t = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (generated, held_out, train))
    if len(t) < cells:
        raise ValueError(f"the C_T test needs at least {cells} training rows, got {len(t)}")
    labels_t = kmeans(t, cells, generator=torch.Generator().manual_seed(seed))
    centres = torch.stack([t[labels_t == c].mean(0) if bool((labels_t == c).any()) else torch.full((t.shape[1],), math.inf)
                           for c in range(cells)])
    cell_p, cell_q = torch.cdist(p, centres).argmin(1).numpy(), torch.cdist(q, centres).argmin(1).numpy()
    dist_p, dist_q = nearest_rows(p, t)[0].numpy(), nearest_rows(q, t)[0].numpy()
    zs, weights, used = [], [], []
    for c in range(cells):
        in_p, in_q = cell_p == c, cell_q == c
        if in_p.sum() >= min_per_cell and in_q.sum() >= min_per_cell:
            zs.append(_mann_whitney_z(dist_p[in_p], dist_q[in_q]))
            weights.append(in_p.mean())
            used.append(c)
    if not zs:
        raise ValueError(f"no k-means cell holds {min_per_cell} generated and {min_per_cell} held-out rows; "
                         "give more rows")
    value = float(np.dot(weights, zs) / np.sum(weights))
    return {"value": value, "cell_z": [round(z, 4) for z in zs], "cells_used": len(used),
            "held_out_mass_used": float(np.sum(weights))}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    out = ct_statistic(inputs.fake_features, inputs.real_features, inputs.train_features, seed=inputs.seed)
    return {"ct_data_copying": MetricEntry(out.pop("value"), {
        **out, "cells": CELLS, "min_per_cell": MIN_PER_CELL, "copying_below": COPYING_THRESHOLD,
        "meaning": "weighted Mann-Whitney Z of nearest-training-row distances, generated vs held-out (< -3: copying)",
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_held_out": inputs.n_real,
        "n_train": len(inputs.train_features),
    })}


METRIC = Metric(
    name="ct_test",
    keys=(MetricKey("ct_data_copying", "C_T (data-copying Z)", higher_is_better=None, gate="none",
                    gate_reason="a test statistic; its per-cell values are recorded",
                    measured=frozenset({"cell_z", "cells_used", "held_out_mass_used"})),),
    needs=("features", "train"),
    description="C_T data-copying test: Mann-Whitney Z of distances to the training set, generated vs held-out, per k-means cell",
    reference="Meehan, Chaudhuri & Dasgupta 2020, eq. 3",
    compute=_compute,
    min_samples=lambda options: MIN_PER_CELL,
    uncertainty="none",
)
