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

import math

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from harness.core import ode
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
    """Euler trajectory of dz/dt = velocity(z, t) from z0 [B, *shape] at t0 to t1: [steps + 1, B, *shape].

    ``harness.core.ode.fixed_step_trajectory`` (method ``"euler"``, h = (t1 − t0)/steps); ``velocity``
    gets t [B] in z0's dtype.
    """
    return ode.fixed_step_trajectory(lambda z, t: velocity(z, t.to(z.dtype)), z0, t0, t1, method="euler", steps=steps)


def straightness_of_velocity(velocity: Callable[[Tensor, Tensor], Tensor], rng: BatchRNG, shape: Sequence[int], *,
                             steps: int = 100, t0: float = 0.0, t1: float = 1.0) -> dict[str, float]:
    """S(Z) of the flow dz/dt = velocity(z, t) started at z0 = ``rng.normal(shape)`` (one per example of ``rng``).

    Integrates with ``steps`` Euler steps on [t0, t1] (a flow-matching model: ``model.net``, t0 = 0,
    t1 = ``model.config.t_max``) and returns :func:`straightness` of that trajectory.
    """
    z0 = rng.normal(tuple(shape))
    return straightness(euler_trajectory(velocity, z0, steps=steps, t0=t0, t1=t1))


def _compute(inputs: Any, options: Any) -> dict[str, Any]:
    from harness.core.metric import MetricEntry
    from harness.core.stats import block_means

    model, n, steps, batch = inputs.model, inputs.num_samples, options.model.straightness_steps, inputs.batch_size
    per: list[Tensor] = []
    for lo in range(0, n, batch):
        idx = range(lo, min(lo + batch, n))
        z0 = BatchRNG(inputs.seed, idx, stream="straightness", device=inputs.device).normal(tuple(model.data_spec.shape))
        per.append(straightness_per_example(model.trajectory(z0, steps=steps)).cpu())
    values = torch.cat(per)
    mean, stderr = mean_and_stderr(values)
    return {"straightness": MetricEntry(mean, {
        "stderr": stderr, "block_means": block_means(values), "n": n, "seed": inputs.seed, "euler_steps": steps,
        "definition": "E ∫_0^1 ||dZ/dt - (Z1 - Z0)||^2 dt on the Euler grid, z0 ~ N(0, I) (Liu et al. 2023, eq. 4)"})}


def _metric() -> Any:
    from harness.core.metric import Metric, MetricKey

    return Metric(
        name="straightness",
        keys=(MetricKey("straightness", "straightness S", higher_is_better=False, bounds=(0.0, math.inf)),),
        needs=("model:FlowTrajectory",),
        description="straightness S(Z) of a flow's Euler trajectories from the prior (0: straight)",
        reference="Liu et al. 2023, eq. 4",
        compute=_compute,
        settings=("straightness_steps",),
        uncertainty="per-example",
    )


METRIC = _metric()
