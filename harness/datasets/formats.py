"""Load a dataset from a path, picking the on-disk format from what is there.

A path spec is ``PATH`` or ``PATH:SPLIT`` with SPLIT ``train`` (default) or ``test``; the split only
applies to IDX and CIFAR-10 directories. Recognised, in this order:

* ``*.npz`` file -> :mod:`harness.datasets.npz`;
* ``*-images-idx3-ubyte[.gz]`` file, or a directory with ``train-``/``t10k-images-idx3-ubyte[.gz]``
  (or those under ``raw/``) -> :mod:`harness.datasets.idx`;
* a directory with CIFAR-10 ``data_batch_*``/``test_batch`` (or a ``cifar-10-batches-py/`` child)
  -> :mod:`harness.datasets.cifar`;
* any other directory -> PNG/JPEG images found recursively, :mod:`harness.datasets.imagefolder`.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.datasets import cifar, idx, imagefolder, npz
from harness.datasets.base import Dataset

SPLITS = ("train", "test")
ACCEPTED_FORMATS = (
    "a registered dataset name (see `genbench ls datasets`); a directory of PNG/JPEG images; an .npz file "
    "(key arr_0/x/images/samples); an MNIST-style IDX directory or *-images-idx3-ubyte[.gz] file; "
    "a CIFAR-10 cifar-10-batches-py directory. Append ':test' to pick the test split of IDX/CIFAR-10"
)
_PATH_SUFFIXES = (".npz", ".gz", "-ubyte", *imagefolder.IMAGE_SUFFIXES)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"dir:test"`` -> ``("dir", "test")``; a spec without a split suffix, or an existing path, -> (spec, None)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in SPLITS and head and not os.path.exists(spec):
        return head, tail
    return spec, None


def looks_like_path(spec: str) -> bool:
    """True if ``spec`` should be read as a path rather than a registry name."""
    path = split_spec(spec)[0]
    return (
        os.path.exists(path)
        or "/" in path
        or os.sep in path
        or path.startswith(("~", "."))
        or path.lower().endswith(_PATH_SUFFIXES)
    )


def load_path(spec: str) -> Dataset:
    """Load ``PATH`` or ``PATH:train|test``; FileNotFoundError if PATH does not exist."""
    raw_path, split = split_spec(spec)
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path.absolute()}. Accepted: {ACCEPTED_FORMATS}.")
    if path.is_dir():
        if idx.is_idx_dir(path):
            return idx.load_idx_dir(path, split or "train", spec)
        batches = cifar.batches_dir(path)
        if batches is not None:
            return cifar.load_cifar10(batches, split or "train", spec)
        _reject_split(split, path, "an image folder")
        return imagefolder.load_image_folder(path, spec)
    if path.suffix.lower() == ".npz":
        _reject_split(split, path, "an .npz file")
        return npz.load_npz(path, spec)
    if "images-idx3-ubyte" in path.name:
        _reject_split(split, path, "a single IDX file")
        return idx.load_idx_images(path, spec)
    raise ValueError(f"{path}: unsupported file type. Accepted: {ACCEPTED_FORMATS}.")


def _reject_split(split: str | None, path: Path, what: str) -> None:
    if split is not None:
        raise ValueError(f"{path} is {what}, which has no splits; drop the ':{split}' suffix")
