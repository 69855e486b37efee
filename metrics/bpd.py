"""Bits per dimension: the one place where nats become bits/dim, with the dequantization constant.

Conventions (used by every likelihood metric in genbench):

* Continuous data (2-D toys, tabular): ``bpd = -log p(x) / (D ln 2)``, with log p in nats.
* Discrete data modelled as a probability mass (PixelCNN, D3PM, a categorical):
  ``bpd = -log P(x) / (D ln 2)``; no offset (a uniform categorical over 256 levels is 8 bits/dim).
* 8-bit images modelled by a continuous density on ``value_range = (lo, hi)``: uniform
  dequantization (Theis et al. 2016, sec. 3.1; Ho et al. 2020 use the same for flows):
  pixel v in {0..255} becomes ``y = lo + (v + u) * (hi - lo) / 256`` with u ~ U[0,1)^D. The density
  of v + u in [0, 256)^D is ``p_y(y) * ((hi - lo) / 256)^D``, hence

      bpd = -log2 p_y(y) / D + log2(256 / (hi - lo)),

  i.e. +8 for data scaled to [0, 1] and +7 for [-1, 1]: score_sde's ``offset = 7 - inverse_scaler(-1)``
  (Song et al. 2021) is this constant. The result upper-bounds the discrete model's bits/dim in
  expectation over u.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2.0)


def dequantization_offset_bits(value_range: tuple[float, float], num_levels: int = 256) -> float:
    """log2(num_levels / (hi - lo)): bits per dim added when scoring quantized data with a density."""
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must have lo < hi, got {value_range}")
    return math.log2(num_levels / (hi - lo))


def dequantize(pixels: Tensor, noise: Tensor, value_range: tuple[float, float], num_levels: int = 256) -> Tensor:
    """Uniformly dequantize integer pixels to model space.

    Args:
        pixels: integer levels in [0, num_levels), any shape (uint8 images: [B, C, H, W]).
        noise: U[0, 1) of the same shape (draw it per example with ``BatchRNG.uniform``).
        value_range: (lo, hi) of model space.

    Returns:
        float32 ``lo + (pixels + noise) * (hi - lo) / num_levels``, same shape.
    """
    lo, hi = value_range
    return lo + (pixels.to(torch.float32) + noise.to(torch.float32)) * ((hi - lo) / num_levels)


def nats_to_bpd(log_prob: Tensor, num_dims: int, *, offset_bits: float = 0.0) -> Tensor:
    """Per-example bits/dim from log-likelihoods in nats: ``-log_prob / (D ln 2) + offset_bits``.

    Args:
        log_prob: [B] log p(x) in nats (summed over the D dimensions of one example).
        num_dims: D.
        offset_bits: ``dequantization_offset_bits(...)`` for dequantized 8-bit data, else 0.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return -log_prob.to(torch.float64) / (num_dims * LN2) + offset_bits
