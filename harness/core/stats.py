"""Statistics shared by the metrics, the drift check and the leaderboard claims.

* per-example values: mean and standard error, and block means (batch means) for paired checks;
* paired differences of two runs from their block means;
* half-sample replicates: which rows replicate r draws, and the factor that turns their spread
  into the standard error at full size.

Half-sampling. A metric is re-estimated on B random half-samples: m = ⌊n/2⌋ generated rows and
m_ref = ⌊n_ref/2⌋ reference rows, without replacement, independently per replicate. The standard
deviation of the replicates times sqrt(m / (n − m)) estimates the standard error at size n: the
delete-d jackknife with d = n − m (Shao & Wu 1989, eq. 2.1), the subsampling bootstrap of Politis
& Romano (1994) with the finite-population factor that m/n = 1/2 calls for; for a mean it is
exact: the variance over half-samples of the half-sample mean is σ²(1/m − 1/n) = σ²/n.
Half-samples hold no duplicated rows, which an ordinary bootstrap resample does (about 37%): a
duplicate is its own nearest neighbour at distance 0, which roughly doubles the spread of the
k-NN metrics, and enters KID's within-set kernel sums as a diagonal term. Measurements of both
schemes are in docs/statistics.md.

The rows of replicate r depend only on the seed, n, n_ref and r: the replicate stream draws the
generated rows, the reference rows and one estimator seed per replicate, in that order, whatever
the metrics. Two runs at the same seed and sizes therefore score the same row subsets, and their
replicate values pair up: the spread of the differences c_r − b_r, times the same factor, is the
standard error of the difference of two runs that share their sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

NUM_BLOCKS = 20  # block means stored per per-example metric, for paired drift checks
HALF_SAMPLE_METHOD = "half-sampling: m = n//2 rows of each set without replacement; std x sqrt(m/(n-m)) (delete-d jackknife)"
_REPLICATE_STREAM = 0x6B6E6F6F62  # separates the replicate stream from every other use of the run seed


def mean_and_stderr(values: Tensor) -> tuple[float, float]:
    """Mean and standard error (std with ddof=1 over sqrt(n)) of per-example values [N]."""
    import torch

    v = values.to(torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("no values to average")
    if not torch.isfinite(v).all():
        raise ValueError(f"{int((~torch.isfinite(v)).sum())} of {v.numel()} values are NaN or Inf")
    stderr = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), stderr


def block_means(values: Tensor, num_blocks: int = NUM_BLOCKS) -> list[float]:
    """Means of per-example values [N] over min(num_blocks, N) contiguous blocks, in example order.

    Block j holds examples ``numpy.array_split(range(N), K)[j]`` (sizes differ by at most one), so
    the blocks depend only on N and K. Two runs at the same seed score the same examples with the
    same noise; the differences of their block means D_j give the standard error of the difference
    of their means, Σ_j n_j (D_j − Δ)² / ((K − 1) N) (batch means, K − 1 degrees of freedom), which
    ``harness.drift`` uses for a paired comparison. 20 floats per metric, whatever N.
    """
    import torch

    v = values.to(torch.float64).flatten()
    k = min(num_blocks, v.numel())
    return [float(block.mean()) for block in torch.tensor_split(v, k)] if k else []


def paired_block_stderr(blocks_b: list[float], blocks_c: list[float], n: int) -> tuple[float, float]:
    """(standard error, df) of mean_c − mean_b from K block means of each over the same n examples.

    Block j holds n_j examples, as ``metrics.bpd.block_means`` splits them (numpy.array_split);
    with D_j the differences of the block means and Δ = Σ n_j D_j / n, the batch-means error is
    sqrt(Σ n_j (D_j − Δ)² / ((K − 1) n)), with K − 1 degrees of freedom.
    """
    k = len(blocks_b)
    if len(blocks_c) != k or not 2 <= k <= n:
        raise ValueError(f"need K block means on both sides with 2 <= K <= n, got {k} and {len(blocks_c)} for n={n}")
    sizes = [n // k + (1 if j < n % k else 0) for j in range(k)]  # numpy.array_split / torch.tensor_split
    d = [y - x for x, y in zip(blocks_b, blocks_c)]
    delta = sum(nj * dj for nj, dj in zip(sizes, d)) / n
    return math.sqrt(sum(nj * (dj - delta) ** 2 for nj, dj in zip(sizes, d)) / ((k - 1) * n)), float(k - 1)


def half_sample_factor(n: int, n_ref: int) -> float:
    """sqrt of the delete-d jackknife factor m/(n − m), averaged over the two sets (1 for even n)."""
    m, m_ref = n // 2, n_ref // 2
    return math.sqrt((m / (n - m) + m_ref / (n_ref - m_ref)) / 2.0)


def half_sample_rows(n: int, n_ref: int, num_replicates: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(generated rows [m], reference rows [m_ref], estimator seed) of each replicate, in order.

    Rows are sorted; replicate r uses ``default_rng(SeedSequence([seed, stream]))`` after r − 1
    replicates have drawn from it (see the module docstring).
    """
    if num_replicates < 2:
        raise ValueError(f"need >= 2 half-sample replicates to estimate a spread, got {num_replicates}")
    m, m_ref = n // 2, n_ref // 2
    if min(m, m_ref) < 1:
        return
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _REPLICATE_STREAM]))
    for _ in range(num_replicates):
        rows = np.sort(rng.choice(n, m, replace=False))
        ref_rows = np.sort(rng.choice(n_ref, m_ref, replace=False))
        yield rows, ref_rows, int(rng.integers(0, 2**31 - 1))


def half_sample_uncertainty(values: list[float], *, n: int, n_ref: int, seed: int) -> dict[str, object]:
    """The record's ``uncertainty`` entry from the replicate values of one key."""
    factor = half_sample_factor(n, n_ref)
    return {"std": float(np.std(values, ddof=1)) * factor, "num_replicates": len(values), "method": HALF_SAMPLE_METHOD,
            "seed": int(seed), "scale": factor, "replicates": [float(v) for v in values]}


def bounded_interval(mean: float, se: float, q: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """The interval mean ± q·se, formed on a scale where ``bounds`` cannot be crossed.

    * (lo, hi) both finite (a fraction in [0, 1]): on the logit scale of (m − lo)/(hi − lo), with the
      delta-method error se / ((m − lo)(hi − m)/(hi − lo));
    * (lo, inf) (a distance, a count, a rate): on the log scale of m − lo, error se / (m − lo);
    * None: the symmetric interval.

    A mean on a bound with se > 0 falls back to the symmetric interval clipped to the bounds; se = 0
    gives the point. The transformed intervals are those of the delta method (e.g. Agresti & Coull
    1998 discuss the logit interval for proportions); they are asymmetric about the mean.
    """
    if not se > 0:
        return mean, mean
    if bounds is None:
        return mean - q * se, mean + q * se
    lo, hi = bounds
    if math.isinf(hi):
        if mean > lo:
            scale = q * se / (mean - lo)
            return lo + (mean - lo) * math.exp(-scale), lo + (mean - lo) * math.exp(scale)
        return lo, mean + q * se
    if lo < mean < hi:
        p = (mean - lo) / (hi - lo)
        z = math.log(p / (1 - p))
        dz = q * se / ((hi - lo) * p * (1 - p))
        expit = lambda t: 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))  # noqa: E731
        return lo + (hi - lo) * expit(z - dz), lo + (hi - lo) * expit(z + dz)
    return max(lo, mean - q * se), min(hi, mean + q * se)
