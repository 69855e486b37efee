"""Class accuracy of generated samples: how often a classifier assigns each sample the class it was
requested as (the class-conditional view of a sample set; e.g. Ho & Salimans 2022 discuss guidance
as trading diversity for this fidelity).

accuracy = (1/n) Σ_i 1{argmax_k logits_ik = y_i}, with y_i the requested label of sample i (a
class-conditional model records them; ``baselines.guidance`` asks example i for label i mod C) and
the logits those of the run's feature extractor (``mnist-cnn`` for digits). Its standard error is the
binomial sqrt(a (1 − a) / n), recorded beside the half-sample replicates' spread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "class_accuracy"]


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, binomial standard error) of argmax ``logits`` [n, K] against ``labels`` int [n] in 0..K−1."""
    scores, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"need logits [n, K] and labels [n], got {list(scores.shape)} and {list(labels.shape)}")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"requested labels must lie in 0..{scores.shape[1] - 1} (the classifier's classes), "
                         f"got {labels.min() if len(labels) else 'none'}..{labels.max() if len(labels) else ''}")
    hit = scores.argmax(1) == labels
    accuracy = float(hit.mean())
    return accuracy, math.sqrt(accuracy * (1.0 - accuracy) / len(hit))


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    accuracy, se = class_accuracy(inputs.fake_logits, inputs.fake_labels)
    fields = {"feature_extractor": inputs.feature_extractor, "n_samples": len(inputs.fake_labels),
              "binomial_stderr": se, "meaning": "fraction of samples the classifier assigns to their requested class"}
    return {"class_accuracy": MetricEntry(accuracy, fields)}


METRIC = Metric(
    name="class_accuracy",
    keys=(MetricKey("class_accuracy", "class accuracy", higher_is_better=True, bounds=(0.0, 1.0)),),
    needs=("logits", "labels"),
    description="fraction of class-conditional samples the extractor's classifier assigns to their requested label (runs when asked for)",
    reference="Ho & Salimans 2022 (classifier-free guidance)",
    compute=_compute,
    uncertainty="half-sample",
    reference_use="none",
    default=False,
)
