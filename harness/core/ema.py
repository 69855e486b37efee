"""Exponential moving average of a module's weights, shared by the training loop and the baselines."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for ema_v, v in zip(self.shadow.state_dict().values(), module.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v, 1.0 - self.decay)
            else:
                ema_v.copy_(v)
