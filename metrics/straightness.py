"""Straightness of a flow's trajectories (Liu et al. 2023, "Rectified Flow", sec. 2.2, Definition / eq. 9).

For a flow Z = {Z_t : t in [0, 1]} with dZ_t/dt = v(Z_t, t),

    S(Z) = ∫₀¹ E ‖(Z_1 − Z_0) − dZ_t/dt‖² dt,

which is 0 exactly when every trajectory is a straight line travelled at constant speed (then a
single Euler step is exact). Reflow decreases it (Liu et al. Theorem 3.7: S(Z^{k}) = O(1/k)
summed over k).

Estimator: per example i, along a trajectory on a time grid t_0 < ... < t_K (rescaled to s in
[0, 1], s = (t − t_0)/(t_K − t_0), so S is the paper's quantity whatever the time span), with the
velocity on step k taken as the chord (x_{k+1} − x_k)/Δs_k (exactly v(x_k, t_k) for Euler
trajectories, where the estimate is the left Riemann sum of the integral):

    S_i = Σ_k Δs_k ‖(x_K − x_0) − (x_{k+1} − x_k)/Δs_k‖²     (‖·‖² summed over all dims of one example)

and S is reported as the mean over examples with its standard error (std/√n). Units: squared
data-space units (per example, summed over dims; not divided by D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from harness.core.rng import BatchRNG
from harness.core.stats import mean_and_stderr

__all__ = ["euler_trajectory", "straightness", "straightness_of_velocity", "straightness_per_example"]


def straightness_per_example(trajectory: Tensor, times: Tensor | Sequence[float] | None = None) -> Tensor:
    """S_i for each example, [B] float64 (module docstring).

    Args:
        trajectory: [K + 1, B, *shape] states on the grid (K >= 1), first Z_0, last Z_1.
        times: [K + 1] strictly monotone grid times (any span, either direction); default uniform.
    """
    if trajectory.dim() < 3 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must be [K + 1, B, *shape] with K >= 1, got shape {tuple(trajectory.shape)}")
    x = trajectory.to(torch.float64).flatten(2)  # [K + 1, B, D]
    k = x.shape[0] - 1
    if times is None:
        ds = torch.full((k,), 1.0 / k, dtype=torch.float64, device=x.device)
    else:
        t = torch.as_tensor(times, dtype=torch.float64, device=x.device).flatten()
        if t.numel() != k + 1:
            raise ValueError(f"times has {t.numel()} entries but the trajectory has {k + 1} states")
        dt = t[1:] - t[:-1]
        if not ((dt > 0).all() or (dt < 0).all()):
            raise ValueError("times must be strictly monotone")
        ds = dt / (t[-1] - t[0])
    chord = x[-1] - x[0]  # [B, D]
    vel = (x[1:] - x[:-1]) / ds[:, None, None]  # [K, B, D]
    return ((chord[None] - vel).pow(2).sum(-1) * ds[:, None]).sum(0)


def straightness(trajectory: Tensor, times: Tensor | Sequence[float] | None = None) -> dict[str, float]:
    """S(Z) of a batch of trajectories [K + 1, B, *shape]: {"value": mean, "stderr": SE, "n": B, "steps": K}."""
    per = straightness_per_example(trajectory, times)
    mean, stderr = mean_and_stderr(per)
    return {"value": mean, "stderr": stderr, "n": int(per.numel()), "steps": int(trajectory.shape[0] - 1)}


@torch.no_grad()
def euler_trajectory(velocity: Callable[[Tensor, Tensor], Tensor], z0: Tensor, *, steps: int = 100,
                     t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """Euler trajectory of dz/dt = velocity(z, t[B]) from z0 [B, *shape]: [steps + 1, B, *shape]."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    h = (t1 - t0) / steps
    z, out = z0, [z0]
    for k in range(steps):
        t = torch.full((z.shape[0],), t0 + k * h, dtype=z.dtype, device=z.device)
        z = z + h * velocity(z, t)
        out.append(z)
    return torch.stack(out)


def straightness_of_velocity(velocity: Callable[[Tensor, Tensor], Tensor], rng: BatchRNG, shape: Sequence[int], *,
                             steps: int = 100, t0: float = 0.0, t1: float = 1.0) -> dict[str, float]:
    """S(Z) of the flow dz/dt = velocity(z, t) started at z0 = ``rng.normal(shape)`` (one per example of ``rng``).

    Integrates with ``steps`` Euler steps on [t0, t1] (a flow-matching model: ``model.net``, t0 = 0,
    t1 = ``model.config.t_max``) and returns :func:`straightness` of that trajectory.
    """
    z0 = rng.normal(tuple(shape))
    return straightness(euler_trajectory(velocity, z0, steps=steps, t0=t0, t1=t1))
