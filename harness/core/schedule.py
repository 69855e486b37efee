"""Learning-rate schedules shared by the baselines' training steps."""

from __future__ import annotations

import torch

__all__ = ["linear_decay"]


def linear_decay(opt: torch.optim.Optimizer, base_lr: float, step: int, start: int, end: int) -> None:
    """Set every group of ``opt`` to base_lr · max(0, 1 − (step − start) / (end − start)): ``base_lr`` at
    ``start``, decaying linearly to 0 at ``end`` (the step of a phase that begins at ``start``)."""
    for group in opt.param_groups:
        group["lr"] = base_lr * max(0.0, 1.0 - (step - start) / (end - start))
