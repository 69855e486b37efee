"""CIFAR-10 "python version" batches (https://www.cs.toronto.edu/~kriz/cifar.html).

A ``cifar-10-batches-py/`` directory holds ``data_batch_1`` .. ``data_batch_5`` (train, 5 x 10000)
and ``test_batch`` (10000). Each is a Python-2 pickle of a dict with ``b"data"``: ``uint8 [N, 3072]``
(1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row-major) and ``b"labels"``:
N ints in 0..9. Pickle is the official distribution format; since unpickling can run code, files
are read with an unpickler that only admits the numpy array constructors these files use.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
DIR_NAME = "cifar-10-batches-py"
_LAYOUT = 'expected a pickled dict with b"data": uint8 [N, 3072] (3x32x32, channel-major) and b"labels": N ints'
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR-10 batches hold only arrays and lists")
        return super().find_class(module, name)


def batches_dir(directory: Path) -> Path | None:
    """``directory`` itself or its ``cifar-10-batches-py/`` child, if either holds CIFAR-10 batches."""
    for candidate in (directory, directory / DIR_NAME):
        if any((candidate / b).is_file() for b in TRAIN_BATCHES + TEST_BATCHES):
            return candidate
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({e}); {_LAYOUT}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: missing b'data'/b'labels' (found {keys}); {_LAYOUT}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: got data {data.dtype} {list(data.shape)} and {labels.size} labels; {_LAYOUT}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(directory: Path, split: str, name: str) -> Dataset:
    """Load the train (5 data batches, in order) or test split of a CIFAR-10 batches directory."""
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    missing = [b for b in names if not (directory / b).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: CIFAR-10 {split} split needs {', '.join(names)}; missing {', '.join(missing)}")
    parts = [_read_batch(directory / b) for b in names]
    x = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset(name=name, x=x, labels=labels, kind="image", source=f"{directory} (CIFAR-10 {split}: {', '.join(names)})")
