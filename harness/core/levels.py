"""8-bit pixels and K grey levels: the one rule that maps between them (K = 2 .. 256).

A pixel v in 0..255 is level c = round(v (K − 1) / 255) (halves round up), and level c is pixel
round(c · 255 / (K − 1)). The round trip level → pixel → level is the identity for every K ≤ 256;
K = 256 is the identity on pixels and K = 2 is binarization at 128 (v ≥ 128 → 1). Integer arithmetic
throughout, so the maps are exact on every device.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_LEVELS", "check_levels", "levels_to_pixels", "pixels_to_levels"]

MAX_LEVELS = 256


def check_levels(levels: int) -> int:
    """``levels`` if it is an int in 2..256, else ValueError."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
        raise ValueError(f"the number of grey levels must be an int in 2..{MAX_LEVELS}, got {levels!r}")
    return levels


def pixels_to_levels(x: Tensor, levels: int) -> Tensor:
    """uint8 pixels (any shape) -> int64 levels 0..K−1: round(v (K − 1) / 255), halves up."""
    k = check_levels(levels) - 1
    return (x.to(torch.int64) * (2 * k) + 255) // 510


def levels_to_pixels(c: Tensor, levels: int) -> Tensor:
    """Integer levels 0..K−1 (any shape; clamped into range) -> uint8 pixels round(c · 255 / (K − 1)), halves up."""
    k = check_levels(levels) - 1
    c = c.to(torch.int64).clamp(0, k)
    return ((c * 510 + k) // (2 * k)).to(torch.uint8)
