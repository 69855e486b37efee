"""Inception Score (IS; Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 4).

IS = exp(E_x KL(p(y|x) || p(y))), estimated per split with p(y) the split's mean prediction and
reported as mean and std over splits — exactly torch-fidelity's ``isc_features_to_metric``.
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np
import torch

from scipy.special import log_softmax, logsumexp

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "inception_score"]


def inception_score(
    logits: np.ndarray | torch.Tensor,
    *,
    splits: int = 10,
    seed: int = 2020,
    shuffle: bool = True,
) -> tuple[float, float]:
    """Inception Score mean and standard deviation (ddof=0) over ``splits`` splits.

    Args:
        logits: [N, K] unnormalised class scores (torch-fidelity feeds ``logits_unbiased``,
            the Inception fc layer without bias); converted to float64.
        splits: number of contiguous splits; split i is rows [i·N//splits, (i+1)·N//splits).
        seed: seed of the local ``np.random.RandomState`` whose ``permutation(N)`` shuffles rows.
        shuffle: shuffle rows before splitting (torch-fidelity ``samples_shuffle``).
    Returns:
        (mean, std) of exp(mean_x KL(p(y|x) || p(y))) per split; dimensionless, in [1, K].
    Notes:
        log p(y) is computed as a log-mean-exp of log p(y|x) and terms with p(y|x) = 0 contribute
        0, so a class whose probability underflows in every row yields a finite score where
        torch-fidelity's ``p * (log p − log q)`` gives NaN; otherwise results agree to ~1e-12.
    """
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to(device="cpu", dtype=torch.float64).numpy()
    scores = np.asarray(logits, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"logits must be 2-D [num_samples, num_classes], got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("logits contain NaN or Inf")
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    n = scores.shape[0]
    if n < splits:
        raise ValueError(f"inception_score needs at least splits={splits} samples, got {n}")
    if shuffle:
        scores = scores[np.random.RandomState(seed).permutation(n)]

    log_p = log_softmax(scores, axis=1)
    p = np.exp(log_p)
    per_split = np.empty(splits, dtype=np.float64)
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        log_p_split, p_split = log_p[rows], p[rows]
        log_marginal = logsumexp(log_p_split, axis=0) - np.log(log_p_split.shape[0])
        kl = np.where(p_split > 0, p_split * (log_p_split - log_marginal), 0.0).sum(axis=1)
        per_split[i] = np.exp(kl.mean())
    return float(per_split.mean()), float(per_split.std())


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    splits = options.sample.is_splits
    mean, std = inception_score(inputs.fake_logits, splits=splits, seed=inputs.seed)
    fields = {"splits": splits, "seed": inputs.seed, "std_ddof": 0, "feature_extractor": inputs.feature_extractor,
              "n_samples": inputs.n_fake, "n_reference": inputs.n_real}
    return {"is_mean": MetricEntry(mean, fields), "is_std": MetricEntry(std, fields)}


METRIC = Metric(
    name="is",
    keys=(MetricKey("is_mean", "IS", higher_is_better=True, bounds=(1.0, math.inf)),
          MetricKey("is_std", "IS std over splits", gate="none", gate_reason="dispersion over IS splits")),
    needs=("logits",),
    description="Inception Score of the generated set over splits (needs an extractor with logits)",
    reference="Salimans et al. 2016",
    compute=_compute,
    settings=("is_splits",),
    min_samples=lambda options: options.sample.is_splits,
    uncertainty="half-sample",
    reference_use="none",
)
