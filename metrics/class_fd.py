"""Per-class Fréchet distance: the class-conditional view of FD for class-conditional samples.

For each class k, FD_k is the Fréchet distance (Heusel et al. 2017, eq. 6) between Gaussian fits of
the features of the samples requested as class k and of the reference rows labelled k:

    FD_k = ‖μ_k − μ'_k‖² + tr(Σ_k + Σ'_k − 2 (Σ_k^{1/2} Σ'_k Σ_k^{1/2})^{1/2}),

and the reported value is the mean over the classes both sets hold, (1/|C|) Σ_k FD_k. Unlike FD of
the pooled sets it sees a model that draws the right digits for the wrong labels: its pooled FD can
be small while every FD_k is large. Each FD_k rests on n/|C| rows, so its small-sample bias (of order
d/n per set) is about |C| times that of the pooled FD: compare per-class FDs only at equal sample and
reference counts. Requested labels come from the model (``requested_labels``), reference labels from
the data set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from metrics.fid import feature_space_label, fid_of_rows

__all__ = ["METRIC", "per_class_fd"]


def per_class_fd(fake: np.ndarray, fake_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray
                 ) -> tuple[float, dict[int, float], dict[int, tuple[int, int]]]:
    """(mean FD over classes, {class: FD_k}, {class: (samples, reference rows)}) of features
    ``fake`` [n, d] with requested labels [n] against ``real`` [m, d] with labels [m]. Every class
    requested must have at least 2 rows in both sets (a Gaussian fit needs 2)."""
    fake, real = np.asarray(fake, dtype=np.float64), np.asarray(real, dtype=np.float64)
    fake_labels, real_labels = np.asarray(fake_labels), np.asarray(real_labels)
    if fake_labels.shape != (len(fake),) or real_labels.shape != (len(real),):
        raise ValueError(f"need one label per row: {len(fake)} samples with {fake_labels.shape[0]} labels, "
                         f"{len(real)} reference rows with {real_labels.shape[0]} labels")
    classes = np.unique(fake_labels)
    counts = {int(k): (int((fake_labels == k).sum()), int((real_labels == k).sum())) for k in classes}
    short = {k: c for k, c in counts.items() if min(c) < 2}
    if short:
        k, (nf, nr) = next(iter(short.items()))
        raise ValueError(f"class {k} has {nf} samples and {nr} reference rows; a per-class FD needs at least 2 of "
                         "each: draw more samples or use a reference holding every requested class")
    per_class = {int(k): fid_of_rows(fake[fake_labels == k], real[real_labels == k]) for k in classes}
    return math.fsum(per_class.values()) / len(per_class), per_class, counts


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    value, per_class, counts = per_class_fd(inputs.fake_features, inputs.fake_labels, inputs.real_features,
                                            inputs.real_labels)
    return {"class_fd": MetricEntry(value, {
        "label": f"per-class {feature_space_label(inputs.feature_extractor)}",
        "per_class": {str(k): v for k, v in per_class.items()},
        "counts": {str(k): list(c) for k, c in counts.items()},
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real,
        "meaning": "mean over the requested classes of FD(samples asked for class k, reference rows of class k)",
    })}


METRIC = Metric(
    name="class_fd",
    keys=(MetricKey("class_fd", "per-class FD", higher_is_better=False, bounds=(0.0, math.inf)),),
    needs=("features", "labels", "real_labels"),
    description="mean over classes of the FD between samples requested as class k and reference rows of class k (runs when asked for)",
    reference="Heusel et al. 2017, eq. 6, within each class",
    compute=_compute,
    uncertainty="half-sample",
    reference_use="rows",
    default=False,
)
