"""PRD curves: precision and recall of distributions from k-means histograms (Sajjadi et al. 2018).

Both sets' features are clustered together (k-means, ``CLUSTERS`` = 20 cells) and each set becomes a
histogram over the cells: p for the reference, q for the generated set. For slopes λ = tan θ,
θ evenly spaced in (0, π/2) (``ANGLES`` = 1001),

    α(λ) = Σ_i min(λ p_i, q_i),   β(λ) = α(λ) / λ                    (Sajjadi et al. 2018, Theorem 1)

trace the PRD curve (precision α, recall β); the curve is averaged over ``RUNS`` = 10 clusterings.
The summaries are F_8 = max over the curve of (1 + 8²) α β / (8² α + β) (recall-weighted: did the
model cover the reference?) and F_1/8 (precision-weighted: do its samples look like the reference?),
as ``prd_to_max_f_beta_pair`` of the authors' code (google compare_gan, ``prd_score.py``), whose
defaults these are; as there, both sets must have the same number of rows (``enforce_balance``).

k-means is Lloyd's algorithm from k-means++ seeds (Arthur & Vassilvitskii 2007), the best of
``INITS`` seedings by inertia, seeded by the run seed; the authors use scikit-learn's
MiniBatchKMeans, so curves agree with theirs in distribution, not run by run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["METRIC", "f_beta_pair", "kmeans", "prd_curve", "prd_from_features"]

CLUSTERS = 20
ANGLES = 1001
RUNS = 10
INITS = 10
ITERATIONS = 100
EPSILON = 1e-10
CURVE_POINTS = 101  # the averaged curve is recorded at every 10th angle


def kmeans(x: torch.Tensor, k: int, *, generator: torch.Generator, inits: int = INITS,
           iterations: int = ITERATIONS) -> torch.Tensor:
    """Cluster labels [n] of rows x [n, d] (float64): Lloyd's algorithm from k-means++ seeds, best of ``inits``."""
    best_labels, best_inertia = None, math.inf
    sq_norms = (x * x).sum(1)
    for _ in range(inits):
        centres = x[torch.randint(len(x), (1,), generator=generator)]
        for _ in range(1, k):  # k-means++: next centre drawn with probability ∝ squared distance
            d2 = torch.cdist(x, centres).square().min(1).values
            pick = torch.multinomial(d2 / d2.sum(), 1, generator=generator) if d2.sum() > 0 else torch.randint(
                len(x), (1,), generator=generator)
            centres = torch.cat([centres, x[pick]])
        labels = None
        for _ in range(iterations):
            dist = sq_norms[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None, :]
            new = dist.argmin(1)
            if labels is not None and torch.equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = labels == c
                if members.any():
                    centres[c] = x[members].mean(0)
        inertia = float(torch.cdist(x, centres).square().gather(1, labels[:, None]).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    assert best_labels is not None
    return best_labels


def prd_curve(ref_hist: np.ndarray, eval_hist: np.ndarray, *, angles: int = ANGLES) -> tuple[np.ndarray, np.ndarray]:
    """(precision [angles], recall [angles]) of histogram ``eval_hist`` against ``ref_hist`` (Sajjadi et al. 2018, Thm 1)."""
    p, q = np.asarray(ref_hist, dtype=np.float64), np.asarray(eval_hist, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1 or not (math.isclose(p.sum(), 1) and math.isclose(q.sum(), 1)):
        raise ValueError("histograms must be 1-D, of equal length, each summing to 1")
    slopes = np.tan(np.linspace(EPSILON, math.pi / 2 - EPSILON, angles))
    precision = np.minimum(p[None, :] * slopes[:, None], q[None, :]).sum(1)
    recall = precision / slopes
    return np.clip(precision, 0, 1), np.clip(recall, 0, 1)


def f_beta_pair(precision: np.ndarray, recall: np.ndarray, beta: float = 8.0) -> tuple[float, float]:
    """(max F_β, max F_1/β) over a PRD curve; F_β = (1 + β²) p r / (β² p + r), 0 where p = r = 0."""
    def f(b: float) -> float:
        denominator = b**2 * precision + recall
        values = np.where(denominator > 0, (1 + b**2) * precision * recall / np.where(denominator > 0, denominator, 1), 0.0)
        return float(values.max())

    return f(beta), f(1 / beta)


def prd_from_features(fake: np.ndarray, real: np.ndarray, *, seed: int, clusters: int = CLUSTERS,
                      runs: int = RUNS) -> dict[str, Any]:
    """PRD of generated features ``fake`` [n, d] against ``real`` [n, d], averaged over ``runs`` clusterings."""
    x_fake = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    x_real = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    if len(x_fake) != len(x_real):
        raise ValueError(f"PRD needs sets of equal size (as the authors' enforce_balance), got {len(x_fake)} generated "
                         f"and {len(x_real)} reference rows; set --num-samples")
    if len(x_fake) < clusters:
        raise ValueError(f"PRD needs at least {clusters} rows per set, got {len(x_fake)}")
    both = torch.cat([x_real, x_fake])
    generator = torch.Generator().manual_seed(seed)
    precisions, recalls, f8s, f18s = [], [], [], []
    for _ in range(runs):
        labels = kmeans(both, clusters, generator=generator)
        p = np.bincount(labels[: len(x_real)].numpy(), minlength=clusters) / len(x_real)
        q = np.bincount(labels[len(x_real):].numpy(), minlength=clusters) / len(x_fake)
        precision, recall = prd_curve(p, q)
        precisions.append(precision)
        recalls.append(recall)
        f8, f18 = f_beta_pair(precision, recall)
        f8s.append(f8)
        f18s.append(f18)
    precision, recall = np.mean(precisions, 0), np.mean(recalls, 0)
    f8, f18 = f_beta_pair(precision, recall)
    step = (ANGLES - 1) // (CURVE_POINTS - 1)
    return {"f8": f8, "f1_8": f18, "precision_curve": [round(float(v), 6) for v in precision[::step]],
            "recall_curve": [round(float(v), 6) for v in recall[::step]],
            "f8_run_std": float(np.std(f8s, ddof=1)) if runs > 1 else 0.0,
            "f1_8_run_std": float(np.std(f18s, ddof=1)) if runs > 1 else 0.0}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    out = prd_from_features(inputs.fake_features, inputs.real_features, seed=inputs.seed)
    common = {"clusters": CLUSTERS, "angles": ANGLES, "runs": RUNS, "kmeans": f"Lloyd, k-means++ seeds, best of {INITS}",
              "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real}
    return {
        "prd_f8": MetricEntry(out["f8"], {**common, "run_std": out["f8_run_std"], "precision_curve": out["precision_curve"],
                                         "recall_curve": out["recall_curve"]}),
        "prd_f1_8": MetricEntry(out["f1_8"], {**common, "run_std": out["f1_8_run_std"]}),
    }


_MEASURED = frozenset({"run_std", "precision_curve", "recall_curve"})
METRIC = Metric(
    name="prd",
    keys=(MetricKey("prd_f8", "PRD F8 (recall)", higher_is_better=True, bounds=(0.0, 1.0), gate="none",
                    gate_reason="k-means histograms; the spread over clusterings is recorded", measured=_MEASURED),
          MetricKey("prd_f1_8", "PRD F1/8 (precision)", higher_is_better=True, bounds=(0.0, 1.0), gate="none",
                    gate_reason="k-means histograms; the spread over clusterings is recorded", measured=_MEASURED)),
    needs=("features",),
    description="PRD curve from 20-cell k-means histograms (10 clusterings) with its F8 (recall) and F1/8 (precision) summaries",
    reference="Sajjadi et al. 2018, Theorem 1 and sec. 4",
    compute=_compute,
    min_samples=lambda options: CLUSTERS,
    uncertainty="none",
    default=False,
)
