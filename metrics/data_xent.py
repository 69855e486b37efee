"""Cross-entropy of the generated samples under the data's known density, in bits/dim.

For generated rows x_1..x_n ~ q and a reference distribution whose exact density p is known
(the mixture toys, the checkerboard, ``gaussian-<d>``; ``DatasetMeta.log_density``),

    H(q, p) = E_q[−log p(x)] = H(q) + KL(q ‖ p)                        (Cover & Thomas 2006, eq. 2.90)

estimated by the sample mean of −log p(x_i) / (D ln 2) bits/dim. It is the entropy of the data,
H(p), for perfect samples and larger by KL(q ‖ p) for a model that puts mass where the data has
little: it sees samples between the modes that the Fréchet distance on raw coordinates cannot
(a Gaussian with the data's covariance matches the data's first two moments exactly). It does not
see missing modes (a model on a subset of the modes has a *lower* cross-entropy by up to log of
the mode count): read it beside a coverage metric. A sample where p = 0 (outside the
checkerboard's squares) makes it +∞; then the value is None with the count in the reason, and
``data_support_fraction`` says how many samples lie where p > 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "data_cross_entropy_bpd"]


def data_cross_entropy_bpd(samples: np.ndarray, log_density: Any) -> tuple[float, float, int]:
    """(mean −log p(x) / (D ln 2) over the samples, its standard error, number of samples with p = 0).

    Args:
        samples: [n, D] rows.
        log_density: rows [N, D] -> float64 [N] log densities in nats (−inf outside the support).
    Returns:
        Mean and standard error in bits/dim over the samples with p > 0 (the mean is +inf when any
        has p = 0), and the count of those with p = 0.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"samples must be [n, D] with n >= 2, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or Inf values")
    nll_bpd = -np.asarray(log_density(x), dtype=np.float64) / (x.shape[1] * math.log(2.0))
    outside = int(np.isposinf(nll_bpd).sum())
    inside = nll_bpd[np.isfinite(nll_bpd)]
    se = float(inside.std(ddof=1) / math.sqrt(len(inside))) if len(inside) >= 2 else math.nan
    mean = math.inf if outside else float(inside.mean())
    return mean, se, outside


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    x = inputs.samples
    mean, se, outside = data_cross_entropy_bpd(x, inputs.log_density)
    n = len(x)
    common = {"estimator": "mean of -log2 p_data(x) / D over the generated rows", "num_samples": n}
    reason = f"{outside} of {n} samples lie where the data density is 0 (cross-entropy +inf)" if outside else None
    return {
        "data_xent_bpd": MetricEntry(mean, {**common, "stderr": se}, reason=reason),
        "data_support_fraction": MetricEntry(1.0 - outside / n, {"num_samples": n,
                                             "meaning": "fraction of samples where the data density is > 0"}),
    }


METRIC = Metric(
    name="data_xent",
    keys=(MetricKey("data_xent_bpd", "cross-entropy under p_data", unit="bits/dim", higher_is_better=False),
          MetricKey("data_support_fraction", "in the data's support", higher_is_better=True, bounds=(0.0, 1.0))),
    needs=("samples", "density"),
    description="cross-entropy E_q[-log p_data] of the samples under the data's known density, bits/dim",
    reference="Cover & Thomas 2006, eq. 2.90 (H(q, p) = H(q) + KL(q || p))",
    compute=_compute,
    uncertainty="half-sample",
)
