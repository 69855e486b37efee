"""Distributions whose exact properties are known: the mixture toys' components and fixed Gaussians.

Data sets carry these as metadata (:class:`harness.datasets.base.DatasetMeta`), so that a metric
that needs the mixture centres or the exact log-density asks the data for them, and baselines
that are exact references (``baselines.analytic``) build on the same parameters. Pure numpy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """An equal-weight mixture of isotropic Gaussians in the plane (or any dimension).

    Attributes:
        name: short name recorded with the mode metrics (``"8gaussians"``).
        centers: float64 [M, D] component means, in label order.
        std: σ, the per-coordinate standard deviation of every component.
    """

    name: str
    centers: np.ndarray
    std: float

    def __post_init__(self) -> None:
        centers = np.asarray(self.centers, dtype=np.float64)
        if centers.ndim != 2 or len(centers) < 1:
            raise ValueError(f"mixture centers must be [M, D] with M >= 1, got shape {list(centers.shape)}")
        if not (isinstance(self.std, (int, float)) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"mixture std must be a positive number, got {self.std!r}")
        object.__setattr__(self, "centers", _frozen(centers.copy()))
        object.__setattr__(self, "std", float(self.std))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log density in nats, float64 [N], of points ``x`` [N, D]."""
        x = np.asarray(x, dtype=np.float64)
        m, d = self.centers.shape
        sq = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)  # [N, M]
        log_comp = -0.5 * sq / self.std**2 - d * math.log(self.std) - 0.5 * d * math.log(2 * math.pi)
        top = log_comp.max(axis=1, keepdims=True)
        return (top[:, 0] + np.log(np.exp(log_comp - top).sum(axis=1))) - math.log(m)

    def smoothed(self, noise_std: float) -> GaussianMixture:
        """The mixture convolved with N(0, noise_std² I): every component's std becomes sqrt(σ² + noise_std²)."""
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        return GaussianMixture(f"{self.name}*N(0,{noise_std:g}^2)", self.centers, math.hypot(self.std, noise_std))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Exact score ∇_x log p(x), float64 [N, D], of points ``x`` [N, D]: Σ_k w_k(x) (μ_k − x) / σ²
        with w_k(x) the posterior weight of component k (a softmax of −|x − μ_k|² / 2σ²)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.centers.shape[1]:
            raise ValueError(f"score expects points [N, {self.centers.shape[1]}], got shape {list(x.shape)}")
        logits = -0.5 * ((x[:, None, :] - self.centers[None]) ** 2).sum(-1) / self.std**2  # [N, M]
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return (w @ self.centers - x) / self.std**2


EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.02
EIGHT_GAUSSIANS_CENTERS = _frozen(
    EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)
)
"""float64 [8, 2]: the 8gaussians mode centers, in label order."""
TWENTYFIVE_GAUSSIANS_STD = 0.05
TWENTYFIVE_GAUSSIANS_CENTERS = _frozen(
    np.array([(x, y) for x in (-4.0, -2.0, 0.0, 2.0, 4.0) for y in (-4.0, -2.0, 0.0, 2.0, 4.0)])
)
"""float64 [25, 2]: the 25gaussians mode centers, in label order."""
def checkerboard_log_prob(x: np.ndarray) -> np.ndarray:
    """Exact log density in nats, float64 [N], of the checkerboard toy at points ``x`` [N, 2].

    The toy is uniform on the 8 squares [2i, 2i + 2) × [2j, 2j + 2), i, j ∈ {−2, −1, 0, 1}, with
    i ≡ j (mod 2): area 32, density 1/32 there (entropy log2(32)/2 = 2.5 bits/dim) and 0 elsewhere.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"checkerboard log density expects points [N, 2], got shape {list(x.shape)}")
    cell = np.floor(x / 2.0)
    inside = (np.abs(x) < 4.0).all(axis=1) & ((cell[:, 0] - cell[:, 1]) % 2 == 0)
    return np.where(inside, -math.log(32.0), -np.inf)


CHECKERBOARD_ENTROPY_BPD = math.log2(32.0) / 2


def mixture_entropy_bpd(mixture: GaussianMixture) -> float:
    """Entropy in bits/dim of an equal-weight mixture whose components do not overlap.

    H = log M + (D/2) log(2πe σ²) nats (each component's entropy plus the choice of component); exact
    up to the overlap of the components, which is below 1e-100 for the 8- and 25-Gaussians toys
    (centres 1.5 and 2 apart, σ 0.02 and 0.05).
    """
    m, d = mixture.centers.shape
    nats = math.log(m) + 0.5 * d * math.log(2 * math.pi * math.e * mixture.std**2)
    return nats / (d * math.log(2.0))


EIGHT_GAUSSIANS = GaussianMixture("8gaussians", EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD)
TWENTYFIVE_GAUSSIANS = GaussianMixture("25gaussians", TWENTYFIVE_GAUSSIANS_CENTERS, TWENTYFIVE_GAUSSIANS_STD)


MAX_GAUSSIAN_DIM = 4096
_GAUSSIAN_PARAMS_ENTROPY = 0x6E6B5A  # fixes every GaussianDensity's mean and covariance
GAUSSIAN_EIGENVALUE_RANGE = (0.5, 2.0)


@dataclass(frozen=True, eq=False)
class GaussianDensity:
    """N(mean, cov) in ``dim`` dimensions with parameters fixed by ``dim`` alone.

    ``mean ~ N(0, I)`` and ``cov = Q diag(lambda) Q^T`` with Q a random orthogonal matrix and the
    eigenvalues ``lambda`` log-spaced over [0.5, 2] (condition number 4), both drawn from a fixed
    seed mixed with ``dim``. Arrays are float64 and read-only.
    """

    dim: int
    mean: np.ndarray = field(init=False, repr=False)  # float64 [dim]
    cov: np.ndarray = field(init=False, repr=False)  # float64 [dim, dim]
    cholesky: np.ndarray = field(init=False, repr=False)  # float64 [dim, dim], lower, cov = L L^T

    def __post_init__(self) -> None:
        d = self.dim
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_GAUSSIAN_DIM:
            raise ValueError(f"GaussianDensity dim must be an integer in 1..{MAX_GAUSSIAN_DIM}, got {d!r}")
        rng = np.random.default_rng(np.random.SeedSequence([_GAUSSIAN_PARAMS_ENTROPY, d]))
        mean = rng.standard_normal(d)
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        cov = (q * np.geomspace(*GAUSSIAN_EIGENVALUE_RANGE, d)) @ q.T
        cov = (cov + cov.T) / 2
        object.__setattr__(self, "mean", _frozen(mean))
        object.__setattr__(self, "cov", _frozen(cov))
        object.__setattr__(self, "cholesky", _frozen(np.linalg.cholesky(cov)))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log density in nats, float64 [N], of points ``x`` [N, dim] (any float dtype)."""
        from scipy.linalg import solve_triangular

        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"log_prob expects points [N, {self.dim}], got shape {list(x.shape)}")
        z = solve_triangular(self.cholesky, (x - self.mean).T, lower=True)
        log_det = 2 * np.log(np.diag(self.cholesky)).sum()
        return -0.5 * (np.einsum("ij,ij->j", z, z) + log_det + self.dim * np.log(2 * np.pi))

    def sample(self, n: int, seed: int | np.random.SeedSequence) -> np.ndarray:
        """``n`` independent draws, float32 [n, dim], from ``np.random.default_rng(seed)``."""
        z = np.random.default_rng(seed).standard_normal((n, self.dim))
        return (self.mean + z @ self.cholesky.T).astype(np.float32)


@functools.lru_cache(maxsize=4)
def gaussian_density(dim: int) -> GaussianDensity:
    """The (cached) :class:`GaussianDensity` of dimension ``dim``."""
    return GaussianDensity(dim)
