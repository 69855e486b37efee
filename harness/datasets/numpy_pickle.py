"""A restricted unpickler for files that are pickles of numpy arrays in plain containers.

Two formats this project reads are pickles: CIFAR-10 python batches (:mod:`.cifar`) and EDM2's
reference statistics (:mod:`harness.reference_stats`). Unpickling can run code or build objects far
larger than the file, so :class:`NumpyUnpickler` admits only what such files contain, bounded:

* numpy array reconstruction exactly as numpy pickles an array: under protocols 2 to 4,
  ``_reconstruct(ndarray, (0,), b)`` then ``__setstate__((1, shape, dtype, fortran, raw))``; under
  protocol 5, ``_frombuffer(buffer, dtype, shape, order)`` with the buffer in-band. Only plain
  numeric dtypes (no object or structured dtypes); the stored bytes must equal the array's size,
  and the array is a view of them, so it costs no more memory than its bytes. At most
  ``max_arrays`` per file.
* ``numpy.core.multiarray.scalar`` of such a dtype (numbers saved as numpy scalars).
* ``_codecs.encode(text, "latin1")``: Python 3 writes every ``bytes`` object this way under
  protocol 2. Only the ``latin1`` codec (output exactly as long as its input; it takes ``str``,
  not ``bytes``, so calls cannot be nested) and a total output of at most ``4 x file size + 1 MiB``:
  text in the file is at least one byte per character, so a genuine file stays under ``1 x``.

Callers walk the whole pickle with :func:`pickletools.genops` first (:func:`check_complete`), so every
length field is checked against the bytes present (the C unpickler allocates a declared length
before reading it). Arrays come back as :class:`PendingArray` placeholders inside the unpickled
containers; :func:`resolve` replaces them by the arrays.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any

import numpy as np

MiB = 1 << 20
RECONSTRUCT = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")})
FROMBUFFER = frozenset({("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")})
SCALAR = frozenset({("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")})
NDARRAY = ("numpy", "ndarray")
DTYPE = ("numpy", "dtype")
_BYTE_ORDERS = ("<", ">", "|", "=")
_MAX_DIMS = 32


class Refused(ValueError):
    """The pickle asks for something the file format never needs; the message says what."""


def text(value: Any) -> Any:
    """``str`` of a Python-2 ``str`` (read as bytes with ``encoding="bytes"``); other values unchanged."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class NdarrayClass:
    """Stands in for ``numpy.ndarray`` in the pickle: it can only be passed to ``_reconstruct``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NdarrayClass:
        raise Refused("refusing numpy.ndarray(...): numpy pickles arrays through _reconstruct")


class PendingDtype:
    """``numpy.dtype(name, align, copy)`` for a plain numeric type; ``BUILD`` may only set its byte order."""

    def __init__(self, name: Any) -> None:
        name = text(name)
        try:
            dtype = np.dtype(name) if isinstance(name, str) and len(name) <= 8 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise Refused(f"refusing numpy dtype {str(name)[:40]!r}: only plain numeric arrays are read")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy writes (3, byte order, None, None, None, -1, -1, 0) for a plain numeric dtype
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[2:] == (None, None, None, -1, -1, 0)
                and text(state[1]) in _BYTE_ORDERS):
            raise Refused("refusing a numpy dtype state other than a plain numeric type's")
        self.dtype = self.dtype.newbyteorder(text(state[1]))


def _check_shape(shape: Any) -> bool:
    return isinstance(shape, tuple) and len(shape) <= _MAX_DIMS and all(type(n) is int and n >= 0 for n in shape)


class PendingArray:
    """The empty array ``_reconstruct`` returns; ``BUILD`` makes it a view of the pickled bytes."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy writes (1, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise Refused("refusing a numpy array state not written by numpy")
        _, shape, dtype, fortran, raw = state
        if not _check_shape(shape) or not isinstance(dtype, PendingDtype) or not isinstance(fortran, bool) \
                or not isinstance(raw, bytes):
            raise Refused("refusing a numpy array state not written by numpy")
        need = math.prod(shape) * dtype.dtype.itemsize
        if need != len(raw):
            raise Refused(f"array of shape {list(shape)[:8]} needs {need} bytes but {len(raw)} are stored")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _dtype(name: Any, align: Any = False, copy: Any = False) -> PendingDtype:
    return PendingDtype(name)


def _scalar(dtype: Any, raw: Any) -> Any:
    if not isinstance(dtype, PendingDtype) or not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise Refused("refusing a numpy scalar not written by numpy")
    return np.frombuffer(raw, dtype.dtype)[0]


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler admitting only numpy numeric arrays/scalars and ``latin1``-encoded bytes, within a budget.

    Args:
        data: the whole pickle (already walked by :func:`check_complete`).
        encoding: how Python-2 ``str`` objects are decoded (``"bytes"`` keeps them as bytes).
        max_arrays: the most arrays the file may hold.
        what: the file kind, for messages ("a CIFAR-10 batch").
    """

    def __init__(self, data: bytes, *, encoding: str, max_arrays: int, what: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.encode_budget = 4 * len(data) + MiB
        self.encoded = 0
        self.arrays = 0
        self.max_arrays = max_arrays
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key == ("_codecs", "encode"):
            return self._encode
        if key in RECONSTRUCT:
            return self._reconstruct
        if key in FROMBUFFER:
            return self._frombuffer
        if key in SCALAR:
            return _scalar
        if key == NDARRAY:
            return NdarrayClass
        if key == DTYPE:
            return _dtype
        return self.refuse(module, name)

    def refuse(self, module: str, name: str) -> Any:
        """Called for any other global; raises :class:`Refused` (subclasses word the message)."""
        raise Refused(f"refusing to load {module}.{name}: {self.what} holds only numpy arrays and plain containers")

    def _count_array(self) -> None:
        self.arrays += 1
        if self.arrays > self.max_arrays:
            raise Refused(f"more than {self.max_arrays} arrays; {self.what} holds fewer")

    def _encode(self, value: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(value, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise Refused(f"refusing _codecs.encode({type(value).__name__}, {str(encoding)[:20]!r}): only "
                          "encode(str, 'latin1'), as Python 3 pickles bytes, is allowed")
        self.encoded += len(value)
        if self.encoded > self.encode_budget:
            raise Refused(f"its _codecs.encode calls would produce over {self.encode_budget} bytes "
                          f"(4 x the file size + 1 MiB), far more than the file holds")
        return value.encode("latin1")

    def _reconstruct(self, cls: Any, shape: Any, typecode: Any) -> PendingArray:
        if cls is not NdarrayClass or shape != (0,) or text(typecode) != "b":
            raise Refused("refusing numpy _reconstruct arguments other than numpy's own (ndarray, (0,), b'b')")
        self._count_array()
        return PendingArray()

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> PendingArray:
        # numpy's protocol-5 reduction: _frombuffer(PickleBuffer, dtype, shape, order), the buffer written in-band
        if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, PendingDtype) or not _check_shape(shape) \
                or order not in ("C", "F"):
            raise Refused("refusing numpy _frombuffer arguments other than numpy's own (in-band bytes, dtype, shape, order)")
        need = math.prod(shape) * dtype.dtype.itemsize
        if need != len(buffer):
            raise Refused(f"array of shape {list(shape)[:8]} needs {need} bytes but {len(buffer)} are stored")
        self._count_array()
        pending = PendingArray()
        pending.array = np.frombuffer(buffer, dtype.dtype).reshape(shape, order=order)
        return pending


def check_complete(data: bytes) -> None:
    """Walk every opcode of ``data`` (one pickle); ValueError when a length field exceeds the bytes present
    or the bytes are not one complete pickle."""
    for _ in pickletools.genops(data):
        pass


def resolve(value: Any, *, depth: int = 0) -> Any:
    """``value`` with every :class:`PendingArray` replaced by its array, through dicts, lists and tuples."""
    if depth > 16:
        raise Refused("containers nested deeper than 16 levels")
    if isinstance(value, PendingArray):
        if value.array is None:
            raise Refused("an array without its data (numpy always writes the data)")
        return value.array
    if isinstance(value, dict):
        return {k: resolve(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(resolve(v, depth=depth + 1) for v in value)
    return value
