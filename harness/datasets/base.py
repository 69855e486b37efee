"""The in-memory :class:`Dataset` every loader returns, and the loader call signature.

Conventions (checked in ``Dataset.__post_init__``):

* images: ``x`` is ``uint8 [N, C, H, W]`` with ``C`` = 1 (grayscale) or 3 (RGB), values 0..255;
* tabular / 2-D toy data: ``x`` is ``float32 [N, D]`` in the data's own units;
* ``labels`` is ``int64 [N]`` or ``None``.
* ``x`` has the strides of a fresh C-order array (a copy is made otherwise), so identical content
  reaches the feature extractors in one memory layout whichever file format it came from.

Treat ``x`` as immutable: ``content_hash`` is computed once and cached on the instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

import numpy as np

from harness.core.densities import GaussianMixture

DEFLATE_MAX_RATIO = 1032
"""Deflate (zip, gzip) expands a stream by at most ~1032:1 (RFC 1951's longest match per code), so a
compressed file of m bytes cannot hold more than 1032·m: the readers refuse headers that claim more."""

DatasetKind = Literal["image", "tabular"]


@dataclass(frozen=True)
class DatasetMeta:
    """What is known about the distribution behind a data set, for the metrics that need it.

    Attributes:
        mixture: the Gaussian mixture the rows were drawn from (the mode metrics need its centres
            and σ), or None.
        log_density: the exact log density in nats, ``float64 [N]`` of rows ``[N, D]``, or None.
    """

    mixture: GaussianMixture | None = None
    log_density: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fully loaded dataset (or set of generated samples) with its provenance.

    Attributes:
        name: the registry name (``"mnist5k-train"``) or the path spec it was loaded from.
        x: images ``uint8 [N, C, H, W]`` (C = 1 or 3) or tabular ``float32 [N, D]``.
        labels: class labels ``int64 [N]``, or ``None`` when the source has none.
        kind: ``"image"`` or ``"tabular"``.
        source: human-readable provenance (package version and rows, or a file path).
        meta: what is known of the distribution (mixture components, exact log density).
    """

    name: str
    x: np.ndarray
    labels: np.ndarray | None
    kind: DatasetKind
    source: str
    meta: DatasetMeta = field(default_factory=DatasetMeta)

    def __post_init__(self) -> None:
        x = self.x
        if not isinstance(x, np.ndarray):
            raise TypeError(f"dataset {self.name!r}: x must be a numpy array, got {type(x).__name__}")
        if self.kind == "image":
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(
                    f"dataset {self.name!r}: images must be uint8 [N, C, H, W] with C = 1 or 3, "
                    f"got {x.dtype} {list(x.shape)}"
                )
        elif self.kind == "tabular":
            if x.dtype != np.float32 or x.ndim != 2:
                raise ValueError(f"dataset {self.name!r}: tabular data must be float32 [N, D], got {x.dtype} {list(x.shape)}")
        else:
            raise ValueError(f"dataset {self.name!r}: kind must be 'image' or 'tabular', got {self.kind!r}")
        if x.shape[0] == 0:
            raise ValueError(f"dataset {self.name!r} is empty (0 samples); source: {self.source}")
        if x.strides != _c_strides(x):
            # e.g. a grayscale NHWC .npz transposed to NCHW: numpy calls [N, 1, H, W] with strides
            # (HW, 1, W, 1) C-contiguous, torch.from_numpy keeps them and convolutions then run as
            # channels-last, changing features by ~1e-5 against the same images read from PNGs.
            object.__setattr__(self, "x", x.copy(order="C"))
        labels = self.labels
        if labels is not None and (labels.dtype != np.int64 or labels.shape != (x.shape[0],)):
            raise ValueError(
                f"dataset {self.name!r}: labels must be int64 [{x.shape[0]}] (one per sample), "
                f"got {labels.dtype} {list(labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @cached_property
    def content_hash(self) -> str:
        """sha256 hex digest of (kind, dtype, shape, raw bytes of ``x``); labels and names are not hashed."""
        digest = hashlib.sha256(f"{self.kind}|{self.x.dtype.str}|{tuple(self.x.shape)}|".encode())
        digest.update(memoryview(np.ascontiguousarray(self.x)).cast("B"))
        return digest.hexdigest()

    def __repr__(self) -> str:
        labels = "None" if self.labels is None else f"int64{list(self.labels.shape)}"
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, x={self.x.dtype}{list(self.x.shape)}, "
            f"labels={labels}, source={self.source!r})"
        )


def _c_strides(x: np.ndarray) -> tuple[int, ...]:
    """The strides in bytes of a freshly allocated C-order array of x's shape and dtype."""
    strides, step = [], x.itemsize
    for size in reversed(x.shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class DatasetLoader(Protocol):
    """What ``DATASETS`` holds: ``loader(num_samples=..., seed=...) -> Dataset``.

    ``num_samples`` and ``seed`` only affect generated (toy) sets; fixed sets ignore them.
    """

    def __call__(self, *, num_samples: int | None, seed: int) -> Dataset: ...
