"""Vendi score: the exponential of the Shannon entropy of a similarity matrix's eigenvalues (Friedman & Dieng 2023).

For n generated rows with the cosine-similarity kernel K_ij = x̂_i · x̂_j (rows L2-normalised),

    VS = exp(−Σ_i λ_i log λ_i),  λ the eigenvalues of K / n                (Friedman & Dieng 2023, eq. 1)

the effective number of distinct rows: 1 when all rows point the same way, n for n orthogonal
rows, at most min(n, d). The nonzero eigenvalues of K / n = X̂ X̂ᵀ / n are those of X̂ᵀ X̂ / n
[d, d], so the cost is O(n d² + d³) and memory O(d²) (``vendi_score.score_dual``). It is a
property of one set; the reference set's score is recorded beside it as the scale to read it on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "vendi_score"]


def vendi_score(x: np.ndarray) -> float:
    """Vendi score (q = 1) of rows x [n, d] under the cosine kernel; rows of norm 0 are refused."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if a.ndim != 2 or not len(a):
        raise ValueError(f"rows must be [n, d] with n >= 1, got {list(a.shape)}")
    norms = a.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{int((norms == 0).sum())} rows have norm 0; the cosine kernel is undefined for them")
    u = a / norms
    eigenvalues = torch.linalg.eigvalsh(u.T @ u / len(u))
    positive = eigenvalues[eigenvalues > 0]
    return float(torch.exp(-(positive * positive.log()).sum()))


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    return {"vendi": MetricEntry(vendi_score(inputs.fake_features), {
        "kernel": "cosine (rows L2-normalised, linear kernel)", "order_q": 1,
        "reference_vendi": vendi_score(inputs.real_features),
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake,
    })}


METRIC = Metric(
    name="vendi",
    keys=(MetricKey("vendi", "Vendi score (cosine)", higher_is_better=True, bounds=(1.0, np.inf),
                    measured=frozenset({"reference_vendi"})),),
    needs=("features",),
    description="Vendi score of the generated set: exp entropy of the cosine-kernel eigenvalues (effective number of distinct samples)",
    reference="Friedman & Dieng 2023, eq. 1",
    compute=_compute,
    uncertainty="half-sample",
    default=False,
)
