"""CIFAR-10 "python version" batches (https://www.cs.toronto.edu/~kriz/cifar.html).

A ``cifar-10-batches-py/`` directory holds ``data_batch_1`` .. ``data_batch_5`` (train, 5 x 10000)
and ``test_batch`` (10000). Each is a Python-2 pickle of a dict with ``b"data"``: ``uint8 [N, 3072]``
(1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row-major) and ``b"labels"``:
N ints in 0..9 (plus ``b"batch_label"`` and ``b"filenames"``, which are not used).

Pickle is the official distribution format, and unpickling can run code or build objects far larger
than the file, so a batch is read by :class:`_BatchUnpickler`, which admits only what these files
contain, bounded:

* numpy array reconstruction exactly as numpy pickles an array -- ``_reconstruct(ndarray, (0,), b)``
  then ``__setstate__((1, shape, dtype, fortran, raw))`` -- for plain numeric dtypes only (no object
  or structured dtypes), with ``len(raw)`` required to equal the array's size; the array is a view of
  ``raw``, so it costs no more memory than its bytes. At most :data:`_MAX_ARRAYS` per file.
* ``numpy.core.multiarray.scalar`` of such a dtype (labels saved as numpy integers).
* ``_codecs.encode(text, "latin1")``: the official files (Python 2) never use it, but Python 3 writes
  every ``bytes`` object this way under protocol 2 (a re-saved batch, this project's test fixtures).
  Only the ``latin1`` codec is allowed (its output is exactly as long as its input, and it takes
  ``str``, not ``bytes``, so calls cannot be nested -- ``hex`` would double its input at each level),
  and the total output of all calls is capped at ``4 x file size + 1 MiB``: text in the file is at
  least one byte per character, so a genuine batch stays under ``1 x``; only memo references that
  encode the same string again and again go over.

Before unpickling, :func:`pickletools.genops` walks the whole file, so every length field is checked
against the bytes actually there (the C unpickler allocates a declared length before reading it).
What remains is pickle's linear overhead (a few dozen bytes of Python objects per opcode). The
unpickled value must then be a dict with the CIFAR layout; anything else is refused with one line
naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
DIR_NAME = "cifar-10-batches-py"
_LAYOUT = 'expected a pickled dict with b"data": uint8 [N, 3072] (3x32x32, channel-major) and b"labels": N ints in 0..9'
_MiB = 1 << 20
_MAX_ARRAYS = 16  # a batch holds one array (b"data"); a re-saved one may hold labels/filenames as arrays too
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_NDARRAY = ("numpy", "ndarray")
_DTYPE = ("numpy", "dtype")
_BYTE_ORDERS = ("<", ">", "|", "=")


class _Refused(ValueError):
    """The batch asks for something a CIFAR batch never needs; the message says what."""


def _text(value: Any) -> Any:
    """``str`` of a Python-2 ``str`` (read as bytes with ``encoding="bytes"``); other values unchanged."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class _NdarrayClass:
    """Stands in for ``numpy.ndarray`` in the pickle: it can only be passed to ``_reconstruct``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _NdarrayClass:
        raise _Refused("refusing numpy.ndarray(...): numpy pickles arrays through _reconstruct")


class _PendingDtype:
    """``numpy.dtype(name, align, copy)`` for a plain numeric type; ``BUILD`` may only set its byte order."""

    def __init__(self, name: Any) -> None:
        name = _text(name)
        try:
            dtype = np.dtype(name) if isinstance(name, str) and len(name) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise _Refused(f"refusing numpy dtype {str(name)[:40]!r}: CIFAR-10 batches hold plain numeric arrays")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy writes (3, byte order, None, None, None, -1, -1, 0) for a plain numeric dtype
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[2:] == (None, None, None, -1, -1, 0)
                and _text(state[1]) in _BYTE_ORDERS):
            raise _Refused("refusing a numpy dtype state other than a plain numeric type's")
        self.dtype = self.dtype.newbyteorder(_text(state[1]))


class _PendingArray:
    """The empty array ``_reconstruct`` returns; ``BUILD`` makes it a view of the pickled bytes."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy writes (1, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refused("refusing a numpy array state not written by numpy")
        _, shape, dtype, fortran, raw = state
        if (not isinstance(shape, tuple) or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape)
                or not isinstance(dtype, _PendingDtype) or not isinstance(fortran, bool) or not isinstance(raw, bytes)):
            raise _Refused("refusing a numpy array state not written by numpy")
        if math.prod(shape) * dtype.dtype.itemsize != len(raw):
            raise _Refused(f"array of shape {list(shape)[:8]} needs {math.prod(shape) * dtype.dtype.itemsize} bytes "
                           f"but {len(raw)} are stored")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _dtype(name: Any, align: Any = False, copy: Any = False) -> _PendingDtype:
    return _PendingDtype(name)


def _scalar(dtype: Any, raw: Any) -> Any:
    if not isinstance(dtype, _PendingDtype) or not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise _Refused("refusing a numpy scalar not written by numpy")
    return np.frombuffer(raw, dtype.dtype)[0]


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler admitting only numpy numeric arrays/scalars and ``latin1``-encoded bytes, within a budget."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.encode_budget = 4 * len(data) + _MiB
        self.encoded = 0
        self.arrays = 0

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key == ("_codecs", "encode"):
            return self._encode
        if key in _RECONSTRUCT:
            return self._reconstruct
        if key in _SCALAR:
            return _scalar
        if key == _NDARRAY:
            return _NdarrayClass
        if key == _DTYPE:
            return _dtype
        raise _Refused(f"refusing to load {module}.{name}: CIFAR-10 batches hold only arrays and lists")

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise _Refused(f"refusing _codecs.encode({type(text).__name__}, {str(encoding)[:20]!r}): only "
                           "encode(str, 'latin1'), as Python 3 pickles bytes, is allowed")
        self.encoded += len(text)
        if self.encoded > self.encode_budget:
            raise _Refused(f"its _codecs.encode calls would produce over {self.encode_budget} bytes "
                           f"(4 x the file size + 1 MiB), far more than the file holds")
        return text.encode("latin1")

    def _reconstruct(self, cls: Any, shape: Any, typecode: Any) -> _PendingArray:
        if cls is not _NdarrayClass or shape != (0,) or _text(typecode) != "b":
            raise _Refused("refusing numpy _reconstruct arguments other than numpy's own (ndarray, (0,), b'b')")
        self.arrays += 1
        if self.arrays > _MAX_ARRAYS:
            raise _Refused(f"more than {_MAX_ARRAYS} arrays; a CIFAR-10 batch holds one")
        return _PendingArray()


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
    except _Refused as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch: {e}") from e
    except Exception as e:  # noqa: BLE001 -- any failure of a hostile or damaged pickle is "not a batch"
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {str(e)[:200]}); {_LAYOUT}") from e
    if isinstance(batch, dict):
        batch = {k: v.array if isinstance(v, _PendingArray) else v for k, v in batch.items()}
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
