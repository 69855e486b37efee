"""Model output to data space: the one place where samples become uint8 images or float rows.

The anchors disagree on rounding, so the rule is a named option recorded with every result:

* ``"round"`` (default): nearest level, ``floor(y * 255 + 0.5)`` with y in [0, 1]; for [-1, 1]
  data this is StyleGAN2-ADA's ``(x * 127.5 + 128).clamp(0, 255).to(uint8)``.
* ``"floor"``: truncation, ``floor(y * 255)``: OpenAI ADM's ``((x + 1) * 127.5).clamp(0, 255)``
  cast and score_sde's ``np.clip(x * 255, 0, 255).astype(uint8)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.core.levels import levels_to_pixels
from harness.core.options import ROUNDING
from harness.core.protocols import DataSpec

__all__ = ["ROUNDING", "samples_to_data", "to_uint8"]


def to_uint8(x: Tensor, value_range: tuple[float, float], *, rounding: str = "round") -> Tensor:
    """Map model-space images [B, C, H, W] in ``value_range`` to uint8 [0, 255] (values outside are clamped)."""
    if rounding not in ROUNDING:
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDING)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(dim=1).sum())
        raise ValueError(f"{bad} of {x.shape[0]} samples contain NaN or Inf values")
    lo, hi = value_range
    y = (x.to(torch.float64) - lo) / (hi - lo) * 255.0
    y = torch.floor(y + 0.5) if rounding == "round" else torch.floor(y)
    return y.clamp(0, 255).to(torch.uint8)


def samples_to_data(x: Tensor, spec: DataSpec, *, rounding: str = "round") -> Tensor:
    """Samples in model space to what the data sets hold.

    Images (3-D per-example shape): uint8 [B, C, H, W]; discrete images with K levels map level c to
    pixel round(c · 255 / (K − 1)) (:mod:`harness.core.levels`: 256 levels are pixel values, binary
    ones 0 and 255). Rows (1-D shape): float32 [B, D].
    """
    if tuple(x.shape[1:]) != spec.shape:
        raise ValueError(f"model returned samples of shape {tuple(x.shape[1:])}, but its data_spec says {spec.shape}")
    if len(spec.shape) != 3:
        out = x.to(torch.float32)
        if not torch.isfinite(out).all():
            raise ValueError("samples contain NaN or Inf values")
        return out
    if spec.kind == "discrete":
        return levels_to_pixels(x, spec.num_categories or 256)
    return to_uint8(x, spec.value_range, rounding=rounding)
