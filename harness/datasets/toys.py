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

from collections.abc import Callable

import numpy as np

from harness.core.densities import (
    EIGHT_GAUSSIANS,
    TWENTYFIVE_GAUSSIANS,
    GaussianMixture,
    checkerboard_log_prob,
    gaussian_density,
)
from harness.datasets.base import Dataset, DatasetMeta

DEFAULT_NUM_SAMPLES = 10_000
SPLIT_STREAMS = {"train": 0, "test": 1}


RINGS_RADII = (0.75, 1.5, 2.25, 3.0)

ToyResult = tuple[np.ndarray, np.ndarray | None]


def _mixture(mixture: GaussianMixture) -> Callable[[np.random.Generator, int], ToyResult]:
    centers, std = mixture.centers, mixture.std

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
    "8gaussians": _mixture(EIGHT_GAUSSIANS),
    "25gaussians": _mixture(TWENTYFIVE_GAUSSIANS),
    "checkerboard": _checkerboard,
    "moons": _moons,
    "spirals": _spirals,
    "rings": _rings,
}
MIXTURES: dict[str, GaussianMixture] = {"8gaussians": EIGHT_GAUSSIANS, "25gaussians": TWENTYFIVE_GAUSSIANS}
"""The toys that are Gaussian mixtures; their data sets carry the mixture as metadata."""
DENSITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"checkerboard": checkerboard_log_prob}
"""Other toys whose exact log density is known (carried as ``DatasetMeta.log_density``)."""


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
    mixture = MIXTURES.get(toy)
    meta = DatasetMeta(mixture=mixture, log_density=mixture.log_prob if mixture is not None else DENSITIES.get(toy))
    return Dataset(name=f"{toy}-{split}", x=x.astype(np.float32), labels=labels, kind="tabular", source=source, meta=meta)


def load_gaussian(dim: int, split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``gaussian-<dim>-<split>``: ``num_samples`` (default 10000) draws, float32 [N, dim], no labels."""
    n = _num_samples(num_samples)
    x = gaussian_density(dim).sample(n, split_seed(seed, split))
    source = f"harness.datasets.toys GaussianDensity(dim={dim}): {n} samples, seed {seed}, {split} stream"
    meta = DatasetMeta(log_density=gaussian_density(dim).log_prob)
    return Dataset(name=f"gaussian-{dim}-{split}", x=x, labels=None, kind="tabular", source=source, meta=meta)
