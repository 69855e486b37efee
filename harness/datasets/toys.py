"""Generated ("toy") datasets: the 2-D sets of the GAN / normalizing-flow literature and known Gaussians.

All are ``float32 [N, D]`` (``kind="tabular"``), drawn with ``np.random.default_rng`` (no global
RNG state). Train and test use disjoint streams: children 0 and 1 of ``SeedSequence(seed)``
(``SeedSequence(seed, spawn_key=(k,))``), so ``<toy>-test`` never repeats ``<toy>-train``.

2-D sets (data roughly within [-4, 4]^2):

* ``8gaussians``: 8 equal-weight modes at radius 2, angles ``2 pi k / 8`` (k = 0..7), isotropic
  std 0.02 (the ring of Metz et al. 2017 "Unrolled GANs" / Srivastava et al. 2017 "VEEGAN").
  Labels are the mode index k.
* ``25gaussians``: 25 equal-weight modes on the grid ``{-4, -2, 0, 2, 4}^2`` (the WGAN-GP / VEEGAN /
  PacGAN grid: ``{-2..2} x 2``), std 0.05. Mode index ``5 * i + j`` for center ``(2i - 4, 2j - 4)``.
* ``checkerboard``: uniform on 8 of the 16 2x2 squares of [-4, 4]^2, alternating (FFJORD).
* ``moons``: the two half circles of ``sklearn.datasets.make_moons`` with uniform angles, Gaussian
  noise 0.1, then ``* 2 + (-1, -0.2)`` (FFJORD).
* ``spirals``: two interleaved spirals, radius ``sqrt(u) * 3 pi`` with uniform jitter 0.5, divided
  by 3, plus Gaussian noise 0.1 (FFJORD "2spirals").
* ``rings``: 4 concentric circles of radius 0.75, 1.5, 2.25, 3 (equally likely), uniform angle,
  Gaussian noise 0.08 (FFJORD).

Unlike FFJORD, every sample is drawn independently (component chosen at random rather than in
fixed proportions), so any N works. Labels: mode index for the two mixtures, ``None`` otherwise.

``gaussian-<d>``: :class:`GaussianDensity`, a d-dimensional normal with a fixed, full covariance
whose exact log density is known, for testing likelihood estimators.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.datasets.base import Dataset

DEFAULT_NUM_SAMPLES = 10_000
SPLIT_STREAMS = {"train": 0, "test": 1}


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


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
RINGS_RADII = (0.75, 1.5, 2.25, 3.0)

ToyResult = tuple[np.ndarray, np.ndarray | None]


def _mixture(centers: np.ndarray, std: float) -> Callable[[np.random.Generator, int], ToyResult]:
    def draw(rng: np.random.Generator, n: int) -> ToyResult:
        labels = rng.integers(0, len(centers), n)
        return centers[labels] + std * rng.standard_normal((n, 2)), labels.astype(np.int64)

    return draw


def _checkerboard(rng: np.random.Generator, n: int) -> ToyResult:
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2 * np.stack([x1, x2], axis=1), None


def _moons(rng: np.random.Generator, n: int) -> ToyResult:
    t = rng.uniform(0, np.pi, n)
    inner = rng.integers(0, 2, n).astype(bool)
    x = np.where(inner, 1 - np.cos(t), np.cos(t))
    y = np.where(inner, 0.5 - np.sin(t), np.sin(t))
    points = np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2))
    return 2 * points + np.array([-1.0, -0.2]), None


def _spirals(rng: np.random.Generator, n: int) -> ToyResult:
    r = np.sqrt(rng.random(n)) * 3 * np.pi
    arm = np.stack([-np.cos(r) * r, np.sin(r) * r], axis=1) + 0.5 * rng.random((n, 2))
    sign = 1 - 2 * rng.integers(0, 2, n)[:, None]
    return sign * arm / 3 + 0.1 * rng.standard_normal((n, 2)), None


def _rings(rng: np.random.Generator, n: int) -> ToyResult:
    radius = np.asarray(RINGS_RADII)[rng.integers(0, len(RINGS_RADII), n)]
    angle = rng.uniform(0, 2 * np.pi, n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + 0.08 * rng.standard_normal((n, 2)), None


TOYS_2D: dict[str, Callable[[np.random.Generator, int], ToyResult]] = {
    "8gaussians": _mixture(EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD),
    "25gaussians": _mixture(TWENTYFIVE_GAUSSIANS_CENTERS, TWENTYFIVE_GAUSSIANS_STD),
    "checkerboard": _checkerboard,
    "moons": _moons,
    "spirals": _spirals,
    "rings": _rings,
}


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The seed sequence of ``split``'s stream: child ``SPLIT_STREAMS[split]`` of ``SeedSequence(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(SPLIT_STREAMS[split],))


def _num_samples(num_samples: int | None) -> int:
    n = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_samples must be a positive integer (or None for {DEFAULT_NUM_SAMPLES}), got {num_samples!r}")
    return int(n)


def load_toy(toy: str, split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``<toy>-<split>``: ``num_samples`` (default 10000) points ``float32 [N, 2]`` of a 2-D toy set."""
    n = _num_samples(num_samples)
    rng = np.random.default_rng(split_seed(seed, split))
    x, labels = TOYS_2D[toy](rng, n)
    source = f"harness.datasets.toys {toy}: {n} samples, seed {seed}, {split} stream"
    return Dataset(name=f"{toy}-{split}", x=x.astype(np.float32), labels=labels, kind="tabular", source=source)


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


def load_gaussian(dim: int, split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``gaussian-<dim>-<split>``: ``num_samples`` (default 10000) draws, float32 [N, dim], no labels."""
    n = _num_samples(num_samples)
    x = gaussian_density(dim).sample(n, split_seed(seed, split))
    source = f"harness.datasets.toys GaussianDensity(dim={dim}): {n} samples, seed {seed}, {split} stream"
    return Dataset(name=f"gaussian-{dim}-{split}", x=x, labels=None, kind="tabular", source=source)
