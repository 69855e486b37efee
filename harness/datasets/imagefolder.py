"""A directory of PNG / JPEG images (searched recursively, loaded in sorted path order) via Pillow.

All images must share one width x height. Mode ``L`` gives 1 channel and ``RGB`` 3; ``1``/``LA`` are
converted to ``L``, and ``RGBA``/``P``/``CMYK``/... to ``RGB`` (alpha is dropped, not composited);
16-bit and float images are rejected.
If grayscale and colour images are mixed, the grayscale ones are replicated to 3 channels (as
Pillow's ``L -> RGB`` does). Labels are ``None``: folder names are not interpreted.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PROGRESS_MIN_FILES = 1000
_TO_GRAY = {"1", "LA"}


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive, case-insensitive suffix match), sorted."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _open_image(path: Path) -> Any:
    """``Image.open`` with the image decoded now, so a corrupt or truncated file is a one-line error."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err}); remove or replace the file") from None
    return img


def load_image_folder(directory: Path, name: str) -> Dataset:
    """Load every image under ``directory`` into ``uint8 [N, C, H, W]``."""
    from tqdm import tqdm

    paths = list_images(directory)
    if not paths:
        raise ValueError(f"{directory}: no {'/'.join(IMAGE_SUFFIXES)} images found (searched recursively)")
    x: np.ndarray | None = None
    first_size: tuple[int, int] = (0, 0)
    converted: Counter[str] = Counter()
    progress = tqdm(paths, desc=f"reading {directory.name}", unit="img", disable=len(paths) <= _PROGRESS_MIN_FILES)
    for i, path in enumerate(progress):
        with _open_image(path) as img:
            if x is None:
                first_size = img.size
            elif img.size != first_size:
                raise ValueError(
                    f"images must all have one size: {paths[0]} is {first_size[0]}x{first_size[1]} but "
                    f"{path} is {img.size[0]}x{img.size[1]} (width x height); resize them first"
                )
            if img.mode.startswith("I") or img.mode == "F":
                raise ValueError(f"{path}: {img.mode!r} (16/32-bit or float) images are not supported; save 8-bit L or RGB")
            if img.mode not in ("L", "RGB"):
                converted[img.mode] += 1
                img = img.convert("L" if img.mode in _TO_GRAY else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if x is None:
            x = np.empty((len(paths), *arr.shape), dtype=np.uint8)
        if arr.shape[0] > x.shape[1]:  # first colour image after grayscale ones: widen what we have
            x = np.repeat(x, 3, axis=1)
        x[i] = arr
    assert x is not None
    if converted:
        logger.info("%s: converted %s to %s", directory, dict(converted), "RGB" if x.shape[1] == 3 else "L")
    return Dataset(name=name, x=x, labels=None, kind="image", source=f"{directory} ({len(paths)} image files)")
