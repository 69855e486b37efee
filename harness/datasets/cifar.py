"""CIFAR-10 "python version" batches (https://www.cs.toronto.edu/~kriz/cifar.html).

A ``cifar-10-batches-py/`` directory holds ``data_batch_1`` .. ``data_batch_5`` (train, 5 x 10000)
and ``test_batch`` (10000). Each is a Python-2 pickle of a dict with ``b"data"``: ``uint8 [N, 3072]``
(1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row-major) and ``b"labels"``:
N ints in 0..9 (plus ``b"batch_label"`` and ``b"filenames"``, which are not used).

Pickle is the official distribution format, and unpickling can run code or build objects far larger
than the file, so a batch is read by :class:`harness.datasets.numpy_pickle.NumpyUnpickler`, which
admits only numpy numeric arrays and scalars and ``latin1``-encoded bytes (Python 3 writes every
``bytes`` object that way under protocol 2: a re-saved batch, this project's test fixtures), within a
budget, at most :data:`_MAX_ARRAYS` arrays per file.

Before unpickling, :func:`pickletools.genops` walks the whole file, so every length field is checked
against the bytes actually there (the C unpickler allocates a declared length before reading it).
What remains is pickle's linear overhead (a few dozen bytes of Python objects per opcode). The
unpickled value must then be a dict with the CIFAR layout; anything else is refused with one line
naming the file.
"""

from __future__ import annotations

import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset
from harness.datasets.numpy_pickle import NumpyUnpickler, PendingArray, Refused

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
DIR_NAME = "cifar-10-batches-py"
_LAYOUT = 'expected a pickled dict with b"data": uint8 [N, 3072] (3x32x32, channel-major) and b"labels": N ints in 0..9'
_MAX_ARRAYS = 16  # a batch holds one array (b"data"); a re-saved one may hold labels/filenames as arrays too


class _BatchUnpickler(NumpyUnpickler):
    """:class:`NumpyUnpickler` for a CIFAR-10 batch: Python-2 ``str`` kept as bytes, at most 16 arrays."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, encoding="bytes", max_arrays=_MAX_ARRAYS, what="a CIFAR-10 batch")

    def refuse(self, module: str, name: str) -> Any:
        raise Refused(f"refusing to load {module}.{name}: CIFAR-10 batches hold only arrays and lists")


def batches_dir(directory: Path) -> Path | None:
    """``directory`` itself or its ``cifar-10-batches-py/`` child, if either holds CIFAR-10 batches."""
    for candidate in (directory, directory / DIR_NAME):
        if any((candidate / b).is_file() for b in TRAIN_BATCHES + TEST_BATCHES):
            return candidate
    return None


def _unpickle(path: Path) -> Any:
    data = path.read_bytes()
    try:
        for _ in pickletools.genops(data):  # checks every opcode and length field against the bytes present
            pass
    except ValueError as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (not a complete pickle: {e}); {_LAYOUT}") from e
    try:
        batch = _BatchUnpickler(data).load()
    except Refused as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch: {e}") from e
    except Exception as e:  # noqa: BLE001 -- any failure of a hostile or damaged pickle is "not a batch"
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {str(e)[:200]}); {_LAYOUT}") from e
    if isinstance(batch, dict):
        batch = {k: v.array if isinstance(v, PendingArray) else v for k, v in batch.items()}
    return batch


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(map(repr, batch))[:8] if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: missing b'data'/b'labels' (found {keys}); {_LAYOUT}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray):
        raise ValueError(f"{path}: b'data' is a {type(data).__name__}, not an array; {_LAYOUT}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(type(v) is int or isinstance(v, np.integer) for v in labels):
        raise ValueError(f"{path}: b'labels' is a {type(labels).__name__}, not a list of ints; {_LAYOUT}")
    if not all(0 <= v <= 9 for v in labels):
        raise ValueError(f"{path}: labels outside 0..9 (e.g. {next(int(v) for v in labels if not 0 <= v <= 9)}); {_LAYOUT}")
    labels = np.array(labels, dtype=np.int64)
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
