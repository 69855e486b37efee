"""``.npz`` archives of images or samples, e.g. the sample files written by guided-diffusion (ADM).

The data array is the first of ``arr_0`` (ADM convention), ``x``, ``images``, ``samples`` present.
Labels, optional, come from ``labels``, ``y`` or, alongside ``arr_0``, ``arr_1`` (ADM's
class-conditional files). Accepted data layouts:

* ``uint8 [N, H, W, C]`` (NHWC) or ``uint8 [N, C, H, W]`` (NCHW) with C = 1 or 3 -> images.
  When both dim 1 and the last dim are 1 or 3 the layout is ambiguous and rejected.
* a float or signed-integer ``[N, D]`` array -> tabular ``float32 [N, D]``.

Rows drawn from a Gaussian mixture may carry it: ``mixture_centers`` (float ``[M, D]``) and
``mixture_std`` (a positive scalar, the components' σ) become the data set's metadata, so the
mode metrics run on the points as they would on the registered mixture toys.

Archives are read with ``allow_pickle=False``, and checked first (:func:`check_members`): every
member's ``.npy`` header must describe exactly the bytes the member holds, and a compressed member
cannot claim more than deflate's maximum ratio (1032:1) of its compressed size, so a small file
cannot ask for a large allocation. A damaged archive is a ValueError naming the file.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from harness.core.densities import GaussianMixture
from harness.datasets.base import DEFLATE_MAX_RATIO, Dataset, DatasetKind, DatasetMeta

DATA_KEYS = ("arr_0", "x", "images", "samples")
LABEL_KEYS = ("labels", "y")
_LAYOUTS = "uint8 images [N, H, W, C] or [N, C, H, W] with C = 1 or 3, or float samples [N, D]"


def _to_dataset_array(arr: np.ndarray, where: str) -> tuple[np.ndarray, DatasetKind]:
    """Return (x, kind) in the Dataset convention, or raise ValueError describing the problem."""
    if arr.dtype == np.uint8 and arr.ndim == 4:
        nchw, nhwc = arr.shape[1] in (1, 3), arr.shape[3] in (1, 3)
        if nchw and nhwc:
            raise ValueError(
                f"{where}: shape {list(arr.shape)} is ambiguous (NCHW or NHWC?); "
                "save images whose height and width are not 1 or 3, or a directory of PNGs"
            )
        if nhwc:
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2)), "image"
        if nchw:
            return arr, "image"
    elif arr.ndim == 2 and (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.signedinteger)):
        return arr.astype(np.float32), "tabular"
    elif arr.ndim == 4 and np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{where}: float images {list(arr.shape)} have no agreed value range; convert to uint8 0..255 "
            "first, e.g. np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for x in [0, 1]"
        )
    raise ValueError(f"{where}: unsupported array {arr.dtype} {list(arr.shape)}; expected {_LAYOUTS}")


def _read(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as e:  # object arrays (need pickle) or a corrupt member
        raise ValueError(f"{path}[{key!r}]: cannot read array ({e}); save plain numeric arrays") from e


DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, zlib.error, NotImplementedError,
            OverflowError, UnicodeDecodeError, SyntaxError)


def check_members(path: Path) -> None:
    """Refuse archives whose members' headers promise other sizes than the members hold."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise ValueError(f"{path}[{info.filename!r}]: claims {info.file_size} bytes from {info.compress_size} "
                                 "compressed, more than deflate can produce; the archive is damaged")
            with zf.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                header_bytes = member.tell()
            need = math.prod(shape) * dtype.itemsize
            if header_bytes + need != info.file_size:
                raise ValueError(f"{path}[{info.filename!r}]: header says {dtype} {list(shape)} ({need} bytes) but the "
                                 f"member holds {info.file_size - header_bytes}; the archive is damaged or truncated")


def load_npz(path: Path, name: str) -> Dataset:
    """Load images or tabular samples (and optional labels) from an ``.npz`` file."""
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            raise ValueError(f"{path}: not an .npz (zip) archive; write one with np.savez(path, arr_0=x)")
    try:
        check_members(path)
        return _load_checked(path, name)
    except DAMAGED as e:
        raise ValueError(f"{path}: damaged .npz archive ({type(e).__name__}: {str(e)[:200]}); rewrite it with "
                         "np.savez(path, arr_0=x)") from e


def _load_checked(path: Path, name: str) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        data_key = next((k for k in DATA_KEYS if k in keys), None)
        if data_key is None:
            found = ", ".join(keys) or "(none)"
            raise ValueError(f"{path}: no data array; looked for keys {', '.join(DATA_KEYS)} but found {found}")
        x, kind = _to_dataset_array(_read(archive, data_key, path), f"{path}[{data_key!r}]")
        label_keys = LABEL_KEYS + (("arr_1",) if data_key == "arr_0" else ())
        label_key = next((k for k in label_keys if k in keys), None)
        labels = None if label_key is None else _read(archive, label_key, path)
        meta = _meta(archive, keys, path, x)
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (x.shape[0],):
            got = f"{labels.dtype} {list(labels.shape)}"
            raise ValueError(f"{path}[{label_key!r}]: labels must be integers [{x.shape[0]}], got {got}")
        labels = labels.astype(np.int64)
    source = f"{path} (npz key {data_key!r}" + (f", labels {label_key!r})" if label_key else ")")
    return Dataset(name=name, x=x, labels=labels, kind=kind, source=source, meta=meta)


def _meta(archive: np.lib.npyio.NpzFile, keys: list[str], path: Path, x: np.ndarray) -> DatasetMeta:
    if "mixture_centers" not in keys and "mixture_std" not in keys:
        return DatasetMeta()
    if "mixture_centers" not in keys or "mixture_std" not in keys:
        raise ValueError(f"{path}: give both mixture_centers [M, D] and mixture_std (a scalar), or neither")
    centers, std = _read(archive, "mixture_centers", path), _read(archive, "mixture_std", path)
    if x.ndim != 2 or centers.ndim != 2 or centers.shape[1] != x.shape[1] or std.size != 1:
        raise ValueError(f"{path}: mixture_centers must be [M, {x.shape[1] if x.ndim == 2 else 'D'}] for rows "
                         f"{list(x.shape)} and mixture_std a scalar; got {list(centers.shape)} and {list(std.shape)}")
    try:
        mixture = GaussianMixture(f"{path.name} mixture", centers.astype(np.float64), float(std.reshape(())))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return DatasetMeta(mixture=mixture, log_density=mixture.log_prob)
