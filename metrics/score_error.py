"""How far a model's score is from the true score of the noise-smoothed data density.

A score-matching model at noise σ (implicit, sliced or denoising score matching; Vincent 2011,
sec. 4) targets the score of q_σ = p_data * N(0, σ² I). For a data set whose density is a known
Gaussian mixture (``DatasetMeta.mixture``), q_σ is the same mixture with every component's std
widened to sqrt(s² + σ²), and its score is exact (:meth:`harness.core.densities.GaussianMixture.score`).
The metric evaluates both on points drawn from q_σ itself, x̃_i = x_i + σ ε_i, x_i the evaluation
rows and ε_i ~ N(0, I) per example (``BatchRNG`` stream ``"score-noise"``), σ = ``model.score_noise_std``:

* ``score_fisher`` = (1/N) Σ_i ½ |s_θ(x̃_i) − ∇log q_σ(x̃_i)|², the Fisher divergence of the model
  from q_σ (Hyvärinen 2005, sec. 2: the explicit score-matching objective), in 1/(data unit)²;
* ``score_rel_error`` = sqrt(Σ_i |s_θ − ∇log q_σ|² / Σ_i |∇log q_σ|²), the relative L2(q_σ) error:
  0 for the true score, 1 for s_θ = 0. It is a norm ratio, so two models within r_a and r_b of the
  truth are within r_a + r_b of each other (triangle inequality).

Both are deterministic given the seed: two rows at one seed score the same points, and the block
means allow a paired comparison. Standard errors: per-example for the Fisher divergence; the delta
method for the ratio of means under the square root.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from harness.core.rng import BatchRNG
from harness.core.stats import block_means

__all__ = ["METRIC", "score_errors"]


def score_errors(model_score: np.ndarray, true_score: np.ndarray) -> dict[str, Any]:
    """Fisher divergence and relative L2 error of ``model_score`` against ``true_score`` (both [N, D]).

    Returns ``fisher`` (mean of ½|Δ|²), ``fisher_stderr``, ``rel_error`` (sqrt(Σ|Δ|² / Σ|s*|²)),
    ``rel_error_stderr`` (delta method) and the per-example ½|Δ|² as ``per_example`` (float64 [N]).
    """
    a = np.asarray(model_score, dtype=np.float64)
    b = np.asarray(true_score, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ValueError(f"scores must be two [N, D] arrays of one shape with N >= 2, got {list(a.shape)} and {list(b.shape)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the model's score has NaN or Inf values at some evaluation points")
    err = ((a - b) ** 2).sum(1)  # |Δ|² per example
    ref = (b**2).sum(1)
    n = len(err)
    m_err, m_ref = float(err.mean()), float(ref.mean())
    ratio = m_err / m_ref
    cov = np.cov(np.stack([err, ref]), ddof=1) / n  # covariance of the two means
    var_ratio = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / m_ref**2
    rel = math.sqrt(ratio)
    rel_se = math.sqrt(max(var_ratio, 0.0)) / (2 * rel) if rel > 0 else 0.0
    half = 0.5 * err
    return {"fisher": float(half.mean()), "fisher_stderr": float(half.std(ddof=1) / math.sqrt(n)),
            "rel_error": rel, "rel_error_stderr": rel_se, "per_example": half}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    model, data, mixture = inputs.model, inputs.data, inputs.mixture
    sigma = float(model.score_noise_std)
    if len(data.spec.shape) != 1:
        raise ValueError(f"score_error scores rows [N, D]; the data have examples of shape {list(data.spec.shape)}")
    target = mixture.smoothed(sigma)
    points, model_scores = [], []
    for start, x in data.batches:
        x = torch.as_tensor(x, dtype=torch.float32)
        eps = BatchRNG(inputs.seed, range(start, start + len(x)), stream="score-noise").normal(tuple(x.shape[1:]))
        noisy = x.cpu() + sigma * eps
        with torch.no_grad():
            s = model.score(noisy.to(inputs.device))
        points.append(noisy.numpy())
        model_scores.append(s.detach().to("cpu", torch.float64).numpy())
    x_all = np.concatenate(points)
    res = score_errors(np.concatenate(model_scores), target.score(x_all))
    common = {**data.common(inputs.seed), "noise_std": sigma, "truth": f"exact score of {target.name}",
              "points": "evaluation rows + noise_std * N(0, I) per example (stream 'score-noise')"}
    return {
        "score_fisher": MetricEntry(res["fisher"], {**common, "stderr": res["fisher_stderr"],
                                                    "block_means": block_means(torch.from_numpy(res["per_example"])),
                                                    "estimator": "mean of 0.5 |s_model - s_true|^2"}),
        "score_rel_error": MetricEntry(res["rel_error"], {**common, "stderr": res["rel_error_stderr"],
                                                          "estimator": "sqrt(sum |s_model - s_true|^2 / sum |s_true|^2)"}),
    }


METRIC = Metric(
    name="score_error",
    keys=(MetricKey("score_fisher", "Fisher div.", higher_is_better=False, bounds=(0.0, math.inf)),
          MetricKey("score_rel_error", "score rel. error", higher_is_better=False, bounds=(0.0, math.inf))),
    needs=("model:Score", "mixture"),
    description="Fisher divergence and relative L2 error of the model's score against the exact score of the "
                "noise-smoothed data density (reference with mixture components)",
    reference="Hyvärinen 2005, sec. 2 (Fisher divergence); Vincent 2011, sec. 4 (the smoothed target q_sigma)",
    compute=_compute,
    uncertainty="per-example",
    default=False,
)
