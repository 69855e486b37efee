"""TopP&R: topological precision and recall over robust support estimates (Kim et al. 2023).

Kim, Jang, Kim & Yoo, "TopP&R: Robust Support Estimation Approach for Evaluating Fidelity and
Diversity in Generative Models", NeurIPS 2023 (arXiv:2306.08013). Each set's support is estimated
as the superlevel set of its kernel density estimate above a bootstrap confidence band, so isolated
rows (outliers) fall outside it, and precision/recall count rows inside both supports (sec. 3):

    supp̂(P) = p̂_h⁻¹[c_X, ∞),  supp̂(Q) = q̂_h⁻¹[c_Y, ∞)                              (sec. 3.1)
    TopP = Σ_j 1(Y_j ∈ supp̂(P) ∩ supp̂(Q)) / Σ_j 1(Y_j ∈ supp̂(Q))    (fidelity,  sec. 3.2)
    TopR = Σ_i 1(X_i ∈ supp̂(Q) ∩ supp̂(P)) / Σ_i 1(X_i ∈ supp̂(P))    (diversity, sec. 3.2)

with X the n reference rows, Y the m generated rows. The estimator is the one of the authors'
``top-pr`` package (0.2.1, ``compute_top_pr`` with its defaults), step by step:

1. Random projection (the package's ``random_proj=True``, against the curse of dimensionality of
   the KDE): rows of d > 32 features are mapped to 32 by one linear map W [32, d] with
   Xavier-normal entries, N(0, 2 / (d + 32)); rows of d ≤ 32 are used as they are. Both sets get
   the same W.
2. Bandwidth (balloon estimate): with d' the dimension after step 1 and k = 5 d', for each row
   i < N − k of a set, r_i is the distance to its k-th nearest neighbour *among the rows after it*
   (j > i; the package's rule, so row order matters); h is the lower median of those N − k radii,
   the ⌊(N − k)/2⌋-th smallest. Each set gets its own h (h_X from X, h_Y from Y, same k).
3. Kernel density estimate at the rows with the compact cosine kernel,
       p̂_h(x) ∝ (1/N) Σ_i cos(π ‖x − X_i‖ / (2h)) · 1(‖x − X_i‖ ≤ h).
   The package multiplies by (π / (4h))^d'; here that constant is left out. It does not change
   any decision: every comparison sets a density with bandwidth h against a band built from
   densities with the same h, so both sides scale by the same factor (and at d' = 32 the
   factor can over- or underflow).
4. Confidence band (sec. 3.1, the bootstrap band of Chen 2017): B = 10 resamples of the set with
   replacement; θ_b = sup over the set's rows of |p̂_h − p̃_h,b|, with p̃_h,b the estimate from resample
   b; c = the (1 − α) quantile of θ_1..θ_B (linear interpolation, α = 0.1). The package writes
   this as q_α(√N θ) / √N; that is the same number up to rounding. A row is in its own set's
   support when p̂_h > c (strict).
5. Cross membership: a generated row is in supp̂(P) when the reference KDE (h_X) there exceeds c_X,
   and a reference row is in supp̂(Q) when the generated KDE (h_Y) there exceeds c_Y. TopF1 is the
   harmonic mean of TopP and TopR, 0 when either is ≤ 1e-4 (the package's rule).

Not implemented: the package's branch for d' ≤ 3 (bandwidth from a persistent-homology grid
search over a 2-D/3-D grid); in top-pr 0.2.1 that branch fails with a NameError anyway. Such rows
are refused.

Randomness and equality with the package. The projection W is drawn by a ``torch.Generator``
seeded with ``projection_seed`` (``normal_`` on an empty [32, d] float32 tensor, the draw
``torch.nn.init.xavier_normal_`` makes), and the bootstrap resamples by one
``np.random.RandomState(bootstrap_seed)`` (``choice(N, N, replace=True)``, ten for X, then ten
for Y, from the same stream). The package seeds these globally: ``torch.manual_seed(99)`` before
its Xavier init, and ``np.random.seed(42)`` (its ``Fix_seed``) before the bootstraps, but only
when it projects (d > 32); for d ≤ 32 its bootstraps use whatever global numpy state there is.
So ``top_pr(..., projection_seed=99, bootstrap_seed=42)`` sees the package's W bit for bit (the
projection is done in float32, as its ``nn.Linear``) and its resamples index for index, and for
d ≤ 32 ``bootstrap_seed=s`` matches the package called after ``np.random.seed(s)``. After the
projection everything is float64; the package's KDE distances are float32 (scikit-learn's
``euclidean_distances``), so densities and bands agree to ~1e-7 relative and the counts agree
unless a density lies that close to a band (tests/test_top_pr.py asserts the ratios to 1e-6).

The metric takes both seeds from the run seed (``MetricInputs.seed``, through a SeedSequence) and
records the run seed and the two derived seeds.

Cost: O((n + m)² d') time in row blocks, O(block · max(n, m)) memory beyond the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey

__all__ = ["ALPHA", "BOOTSTRAP_REPEATS", "METRIC", "MIN_SAMPLES", "NEIGHBOURS_PER_DIM", "PROJECTION_DIM",
           "TopPR", "balloon_bandwidth", "confidence_band", "cosine_kde", "metric_seeds", "random_projection",
           "top_pr"]

PROJECTION_DIM = 32
"""Rows of more features are randomly projected to this many (the package's fixed 32)."""
NEIGHBOURS_PER_DIM = 5
"""k of the balloon bandwidth is this times the dimension after projection (160 at 32)."""
ALPHA = 0.1
"""Significance level of the confidence band (the package's default)."""
BOOTSTRAP_REPEATS = 10
"""Bootstrap resamples per set for the band (the package's fixed 10)."""
MIN_SAMPLES = NEIGHBOURS_PER_DIM * PROJECTION_DIM + 2
"""Rows per set that every dimension needs: N − k ≥ 2 with k at most 5 · 32."""
F1_FLOOR = 1e-4
"""TopF1 is 0 unless both TopP and TopR exceed this (the package's rule)."""

_BLOCK = 1024  # rows of a distance tile: memory only, not the result
_SEED_STREAM = 0x546F7050  # "ToPP": the SeedSequence stream of this metric's two seeds


@dataclass(frozen=True)
class TopPR:
    """The result of :func:`top_pr`.

    Attributes:
        precision: TopP (fidelity) in [0, 1]; nan when no generated row is in its own support.
        recall: TopR (diversity) in [0, 1]; nan when no reference row is in its own support.
        f1: harmonic mean of the two, 0 when either is ≤ 1e-4 (nan when either is nan).
        bandwidth_real, bandwidth_fake: h_X and h_Y, in (projected) feature units.
        band_real, band_fake: c_X and c_Y, in the units of the unnormalised KDE (see the module).
        n_real_support, n_fake_support: rows of each set in its own support (the denominators).
        dim: d', the dimension the estimate ran in; projected: whether rows were projected.
    """

    precision: float
    recall: float
    f1: float
    bandwidth_real: float
    bandwidth_fake: float
    band_real: float
    band_fake: float
    n_real_support: int
    n_fake_support: int
    dim: int
    projected: bool


def random_projection(d: int, *, seed: int, dim: int = PROJECTION_DIM) -> torch.Tensor:
    """Xavier-normal projection weights W, float32 [dim, d] with entries N(0, 2 / (d + dim)).

    Drawn by a fresh ``torch.Generator`` seeded with ``seed``; rows x [N, d] map to x Wᵀ [N, dim].
    """
    gen = torch.Generator().manual_seed(int(seed))
    return torch.empty(dim, d, dtype=torch.float32).normal_(0.0, (2.0 / (d + dim)) ** 0.5, generator=gen)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)] between float64 rows."""
    return torch.cdist(a, b)


def balloon_bandwidth(x: torch.Tensor, k: int) -> float:
    """The package's balloon bandwidth of rows x, float64 [N, d]: lower median of the forward k-NN radii.

    r_i = k-th smallest ‖x_i − x_j‖ over j > i, for i = 0 … N − k − 1; h = the ⌊(N − k)/2⌋-th
    smallest r_i. Units: those of x. Needs N ≥ k + 2.
    """
    n = len(x)
    m = n - k
    if k < 1 or m < 2:
        raise ValueError(f"the balloon bandwidth with k = {k} needs at least {k + 2} rows, got {n}")
    radii = torch.empty(m, dtype=torch.float64)
    cols = torch.arange(n)
    for start in range(0, m, _BLOCK):
        stop = min(start + _BLOCK, m)
        dist = _distances(x[start:stop], x)
        dist.masked_fill_(cols[None, :] <= torch.arange(start, stop)[:, None], torch.inf)  # keep j > i only
        radii[start:stop] = dist.kthvalue(k, dim=1).values
    return float(radii.sort().values[m // 2 - 1])


def cosine_kde(data: torch.Tensor, points: torch.Tensor, h: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised cosine-kernel density of rows ``data`` [N, d] at ``points`` [P, d], float64.

    Returns [P] (or [P, C] with ``weights`` [N, C], one weighted estimate per column):
    (1/N) Σ_i w_i cos(π ‖x − data_i‖ / (2h)) · 1(‖x − data_i‖ ≤ h), with w_i = 1 by default. The
    normalising constant (π / (4h))^d of the package is left out (see the module docstring).
    """
    w = torch.ones(len(data), 1, dtype=torch.float64) if weights is None else weights.to(torch.float64)
    out = torch.empty(len(points), w.shape[1], dtype=torch.float64)
    for start in range(0, len(points), _BLOCK):
        dist = _distances(points[start:start + _BLOCK], data)
        kernel = torch.where(dist <= h, torch.cos((torch.pi / 2) * (dist / h)), 0.0)
        out[start:start + _BLOCK] = kernel @ w
    out /= len(data)
    return out[:, 0] if weights is None else out


def confidence_band(x: torch.Tensor, h: float, rng: np.random.RandomState, *, repeats: int = BOOTSTRAP_REPEATS,
                    alpha: float = ALPHA) -> tuple[torch.Tensor, float]:
    """The KDE of rows x [N, d] at themselves [N] and its bootstrap band c (Kim et al. 2023, sec. 3.1).

    Resample b draws ``rng.choice(N, N, replace=True)``; its estimate is the KDE with each row
    weighted by how often it was drawn. c = (1 − alpha) quantile (linear) over b of
    sup_rows |p̂_h − p̃_h,b|, in the units of :func:`cosine_kde`.
    """
    n = len(x)
    counts = [torch.from_numpy(np.bincount(rng.choice(n, size=n, replace=True), minlength=n)) for _ in range(repeats)]
    weights = torch.stack([torch.ones(n, dtype=torch.int64), *counts], dim=1)
    sums = cosine_kde(x, x, h, weights)
    p_hat = sums[:, 0]
    if repeats == 0:
        return p_hat, 0.0
    theta = (sums[:, 1:] - p_hat[:, None]).abs().amax(dim=0)
    return p_hat, float(torch.quantile(theta, 1.0 - alpha))


def top_pr(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, projection_seed: int,
           bootstrap_seed: int, alpha: float = ALPHA, projection_dim: int = PROJECTION_DIM,
           repeats: int = BOOTSTRAP_REPEATS) -> TopPR:
    """TopP&R of generated rows ``fake`` [m, d] against reference rows ``real`` [n, d] (any feature units).

    Rows are taken as float32 (as the package does), projected to ``projection_dim`` when d exceeds
    it, then handled in float64. ``projection_seed`` seeds W, ``bootstrap_seed`` the resamples
    (reference first, then generated); the package's own are 99 and 42 (see the module docstring).
    Raises ValueError for d' ≤ 3 or fewer than 5 d' + 2 rows in either set.
    """
    x, y = (torch.as_tensor(a).detach().cpu().to(torch.float32) for a in (real, fake))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"rows must be [n, d] and [m, d] with the same d, got {list(x.shape)} and {list(y.shape)}")
    d = x.shape[1]
    projected = d > projection_dim
    if projected:
        w = random_projection(d, seed=projection_seed, dim=projection_dim)
        x, y = torch.nn.functional.linear(x, w), torch.nn.functional.linear(y, w)
    dim = x.shape[1]
    if dim <= 3:
        raise ValueError(f"TopP&R needs more than 3 feature dimensions, got {dim}: its low-dimensional branch "
                         "(a persistent-homology bandwidth search on a grid) is not implemented")
    k = NEIGHBOURS_PER_DIM * dim
    if min(len(x), len(y)) < k + 2:
        raise ValueError(f"TopP&R in {dim} dimensions needs at least {k + 2} rows per set (k = {k} neighbours), "
                         f"got {len(x)} reference and {len(y)} generated")
    x, y = x.to(torch.float64), y.to(torch.float64)
    h_x, h_y = balloon_bandwidth(x, k), balloon_bandwidth(y, k)
    rng = np.random.RandomState(bootstrap_seed)
    p_xx, c_x = confidence_band(x, h_x, rng, repeats=repeats, alpha=alpha)
    q_yy, c_y = confidence_band(y, h_y, rng, repeats=repeats, alpha=alpha)
    x_in_p, y_in_q = p_xx > c_x, q_yy > c_y
    x_in_q = cosine_kde(y, x, h_y) > c_y  # reference rows inside the generated support
    y_in_p = cosine_kde(x, y, h_x) > c_x  # generated rows inside the reference support
    n_p, n_q = int(x_in_p.sum()), int(y_in_q.sum())
    precision = int((y_in_q & y_in_p).sum()) / n_q if n_q else float("nan")
    recall = int((x_in_p & x_in_q).sum()) / n_p if n_p else float("nan")
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2.0 / (1.0 / precision + 1.0 / recall) if precision > F1_FLOOR and recall > F1_FLOOR else 0.0
    return TopPR(precision, recall, f1, h_x, h_y, c_x, c_y, n_p, n_q, dim, projected)


def metric_seeds(seed: int) -> tuple[int, int]:
    """(projection_seed, bootstrap_seed) of run seed ``seed``: two 32-bit words of a SeedSequence."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _SEED_STREAM]).generate_state(2, dtype=np.uint32)
    return int(words[0]), int(words[1])


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    projection_seed, bootstrap_seed = metric_seeds(inputs.seed)
    r = top_pr(inputs.real_features, inputs.fake_features, projection_seed=projection_seed, bootstrap_seed=bootstrap_seed)
    fields = {
        "estimator": "top-pr 0.2.1 compute_top_pr defaults: cosine KDE, balloon bandwidth (k = 5 d'), "
                     "bootstrap confidence band; support = KDE > band",
        "alpha": ALPHA, "bootstrap_repeats": BOOTSTRAP_REPEATS, "projection_dim": PROJECTION_DIM,
        "projected": r.projected, "dim": r.dim, "nearest_k": NEIGHBOURS_PER_DIM * r.dim,
        "seed": inputs.seed, "projection_seed": projection_seed, "bootstrap_seed": bootstrap_seed,
        "seed_rule": "SeedSequence([seed, 0x546F7050]).generate_state(2, uint32) -> projection, bootstrap",
        "feature_extractor": inputs.feature_extractor, "n_samples": inputs.n_fake, "n_reference": inputs.n_real,
        "bandwidth_real": r.bandwidth_real, "bandwidth_fake": r.bandwidth_fake,
        "n_reference_in_support": r.n_real_support, "n_samples_in_support": r.n_fake_support,
    }
    def entry(value: float, reason: str) -> MetricEntry:
        return MetricEntry(None, fields, reason=reason) if np.isnan(value) else MetricEntry(float(value), fields)
    no_q = "no generated row lies in its own estimated support (KDE above the band)"
    no_p = "no reference row lies in its own estimated support (KDE above the band)"
    return {"top_precision": entry(r.precision, no_q), "top_recall": entry(r.recall, no_p),
            "top_f1": entry(r.f1, no_q if np.isnan(r.precision) else no_p)}


def _one_support_row(count_field: str):
    """A TopP&R ratio moves in whole rows of its denominator: 1 / (rows in the support)."""
    def step(entry: Mapping[str, Any]) -> float:
        n = entry.get(count_field)
        return 1.0 / n if isinstance(n, int) and n > 0 else 0.0
    return step


_MEASURED = frozenset({"bandwidth_real", "bandwidth_fake", "n_reference_in_support", "n_samples_in_support"})

METRIC = Metric(
    name="top_pr",
    keys=(MetricKey("top_precision", "TopP (fidelity)", higher_is_better=True, bounds=(0.0, 1.0), measured=_MEASURED,
                    resolution=_one_support_row("n_samples_in_support")),
          MetricKey("top_recall", "TopR (diversity)", higher_is_better=True, bounds=(0.0, 1.0), measured=_MEASURED,
                    resolution=_one_support_row("n_reference_in_support")),
          MetricKey("top_f1", "TopF1", higher_is_better=True, bounds=(0.0, 1.0), measured=_MEASURED)),
    needs=("features",),
    description="TopP&R: precision/recall over KDE supports above a bootstrap confidence band, robust to outliers",
    reference="Kim et al. 2023 (NeurIPS), sec. 3.1-3.2",
    compute=_compute,
    min_samples=lambda options: MIN_SAMPLES,
    uncertainty="half-sample",
    default=False,
)
