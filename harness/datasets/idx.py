"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

Layout (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic ``0x00000803`` (2051) for
``uint8 [N, H, W]`` images or ``0x00000801`` (2049) for ``uint8 [N]`` labels, then one big-endian
uint32 per dimension, then the values, row-major, nothing after. A directory holds
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), directly or under ``raw/`` (torchvision's
layout). Gzip is detected from the file's first bytes, not its name.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.datasets.base import DEFLATE_MAX_RATIO, Dataset

logger = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def read_idx(path: Path, *, magic: int, ndim: int) -> np.ndarray:
    """Read one uint8 IDX file with the given ``magic`` and number of dims; ValueError if malformed."""
    layout = (
        f"expected an IDX file: big-endian int32 magic {magic} (0x{magic:08x}), "
        f"{ndim} big-endian uint32 dims, then uint8 data of exactly that size"
    )
    try:
        with _open(path) as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim:
                raise ValueError(f"{path}: file too short for an IDX header ({len(header)} bytes); {layout}")
            found = int.from_bytes(header[:4], "big")
            if found != magic:
                raise ValueError(f"{path}: bad magic number {found} (0x{found:08x}); {layout}")
            dims = tuple(int(d) for d in np.frombuffer(header, dtype=">u4", offset=4))
            size, on_disk = math.prod(dims), path.stat().st_size
            room = (DEFLATE_MAX_RATIO * on_disk) if isinstance(f, gzip.GzipFile) else on_disk - len(header)
            if size > room:  # checked before allocating: the header cannot ask for more than the file holds
                raise ValueError(f"{path}: header says dims {list(dims)} ({size} values) but the data is shorter: the "
                                 f"file can hold at most {room}; {layout}")
            data = np.empty(size, dtype=np.uint8)
            view, got = memoryview(data), 0
            while got < data.size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < data.size or f.read(1):
                problem = "shorter" if got < data.size else "longer"
                raise ValueError(f"{path}: header says dims {list(dims)} ({data.size} values) but the data is {problem}; {layout}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip stream ({e}); re-download the file") from e
    return data.reshape(dims)


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, also under ``raw/``; None if absent."""
    for folder in (directory, directory / "raw"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def is_idx_dir(directory: Path) -> bool:
    """True if ``directory`` (or its ``raw/``) holds train or t10k IDX images."""
    return any(find_idx_file(directory, f"{p}-images-idx3-ubyte") for p in SPLIT_PREFIXES.values())


def load_idx_dir(directory: Path, split: str, name: str) -> Dataset:
    """Load the ``train`` (``train-*``) or ``test`` (``t10k-*``) split of an IDX directory."""
    stem = f"{SPLIT_PREFIXES[split]}-images-idx3-ubyte"
    images = find_idx_file(directory, stem)
    if images is None:
        raise FileNotFoundError(f"{directory}: no {stem}[.gz] for the {split} split (looked in it and in its raw/)")
    return load_idx_images(images, name)


def load_idx_images(images: Path, name: str) -> Dataset:
    """Load an ``*-images-idx3-ubyte[.gz]`` file and, if present beside it, its labels file."""
    x = read_idx(images, magic=IMAGES_MAGIC, ndim=3)
    stem = images.name.removesuffix(".gz").replace("images-idx3", "labels-idx1")
    labels_path = find_idx_file(images.parent, stem) if stem != images.name.removesuffix(".gz") else None
    labels = None
    if labels_path is None:
        logger.info("%s: no %s[.gz] beside it; loading without labels", images, stem)
    else:
        labels = read_idx(labels_path, magic=LABELS_MAGIC, ndim=1).astype(np.int64)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{labels_path}: {labels.shape[0]} labels but {images} has {x.shape[0]} images; they must match")
    source = f"{images} (IDX)" + (f" + {labels_path}" if labels_path else "")
    return Dataset(name=name, x=x[:, None], labels=labels, kind="image", source=source)
