"""Authenticity in its nearest-neighbour form (Alaa, van Breugel, Saveliev & van der Schaar 2022, sec. 3.3).

A generated row g is unauthentic, a likely copy, when it lies closer to its nearest training row
r* than any other training row does: d(g, r*) < d(r*, T ∖ {r*}). The score is the fraction of
authentic generated rows. An exact copy of a training row is always unauthentic; a fresh sample of
the training distribution is unauthentic about half the time (it and r*'s own nearest neighbour
are then exchangeable draws near r*), so the score of data is about 0.5 and a model's score well
below it says copying. Distances are exact Euclidean (float64); ties count as unauthentic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.knn import knn_radii_multi, nearest_rows

__all__ = ["METRIC", "authenticity"]

def authenticity(generated: np.ndarray, train: np.ndarray) -> dict[str, Any]:
    """Fraction of generated rows [m, d] farther from their nearest training row than that row's own
    nearest training neighbour (train [t, d], t >= 2); returns {"value", "unauthentic"}."""
    q = torch.as_tensor(np.asarray(generated), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(train), dtype=torch.float64)
    if len(t) < 2:
        raise ValueError(f"authenticity needs at least 2 training rows, got {len(t)}")
    own = knn_radii_multi(t, (1,))[1]  # each training row's distance to its nearest other training row
    nearest, index = nearest_rows(q, t)
    unauthentic = int((nearest <= own[index]).sum())
    return {"value": 1.0 - unauthentic / len(q), "unauthentic": unauthentic}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    out = authenticity(inputs.fake_features, inputs.train_features)
    return {"authenticity": MetricEntry(out["value"], {
        "unauthentic": out["unauthentic"],
        "meaning": "fraction of samples farther from their nearest training row than its nearest training neighbour "
                   "(data: about 0.5; copies: 0)",
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_train": len(inputs.train_features),
    })}


METRIC = Metric(
    name="authenticity",
    keys=(MetricKey("authenticity", "authenticity (NN)", higher_is_better=True, bounds=(0.0, 1.0),
                    measured=frozenset({"unauthentic"})),),
    needs=("features", "train"),
    description="authenticity: fraction of samples not closer to a training row than its own nearest neighbour (copies: 0)",
    reference="Alaa et al. 2022, sec. 3.3",
    compute=_compute,
    uncertainty="half-sample",
)
