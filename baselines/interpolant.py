"""Stochastic interpolants (Albergo & Vanden-Eijnden 2023, "Building normalizing flows with stochastic
interpolants", ICLR 2023; seed 004#7): a simulation-free ODE flow between N(0, I) and the data.

Conventions (as :mod:`baselines.flow_matching`): x0 ~ N(0, I) at t = 0, data x1 at t = 1. The
interpolant is x_t = I_t(x0, x1) = a_t x1 + b_t x0 with I_0 = x0 and I_1 = x1:

* ``"linear"``: a_t = t, b_t = 1 − t, ∂_t I_t = x1 − x0;
* ``"trig"``: a_t = sin(πt/2), b_t = cos(πt/2), ∂_t I_t = (π/2)(cos(πt/2) x1 − sin(πt/2) x0).

The velocity v(t, x) = E[∂_t I_t | x_t = x] transports the law of x0 to that of x1 along the ODE
dx/dt = v(t, x), and it is the unique minimiser of the paper's quadratic objective

    G(v̂) = ∫_0^1 E[ |v̂_t(x_t)|² − 2 ∂_t I_t · v̂_t(x_t) ] dt,

which equals E|v̂ − ∂_t I|² − E|∂_t I|²: the conditional flow-matching loss minus a constant that
does not depend on v̂, so the gradients are those of :meth:`FlowMatching.cfm_loss`. The reported
loss is G / D (per dimension), which is negative at the optimum. Times t are drawn from
Beta(``t_beta``) (the paper draws t from a Beta distribution to weight the data end; (1, 1) is the
uniform default). Sampling, the probability-flow bits/dim and the trajectories are those of
:class:`baselines.flow_matching.FlowMatching` (the learned ODE from t = 1, the data, to t = 0).

The linear interpolant is the same path as flow matching's OT path with σ_min = 0 and rectified
flow (Liu et al. 2023); what this family adds is the trigonometric path, the paper's objective and
its time distribution, and the comparison with a CNF trained by maximum likelihood through the ODE
(:mod:`baselines.cnf`, the same network).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from baselines.flow_matching import FlowMatching, FlowMatchingConfig
from harness.core.entries import ModelEntry, pinned

__all__ = ["INTERPOLANTS", "InterpolantConfig", "REGISTRY", "StochasticInterpolant"]

INTERPOLANTS = ("linear", "trig")


@dataclass(frozen=True)
class InterpolantConfig(FlowMatchingConfig):
    """:class:`FlowMatchingConfig` with ``path`` one of :data:`INTERPOLANTS` (default ``"trig"``) and
    ``t_beta`` = (α, β) of the training-time distribution Beta(α, β). ``sigma_min``, ``beta_min``,
    ``beta_max`` and ``t_eps`` do not apply (t_eps must stay 0: both interpolants end exactly at the data)."""

    path: str = "trig"
    t_beta: tuple[float, float] = (1.0, 1.0)

    paths: ClassVar[tuple[str, ...]] = INTERPOLANTS

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "t_beta", tuple(float(v) for v in self.t_beta))
        if len(self.t_beta) != 2 or not all(math.isfinite(v) and v > 0 for v in self.t_beta):
            raise ValueError(f"t_beta must be two finite numbers > 0 (the Beta distribution of t), got {self.t_beta}")


class StochasticInterpolant(FlowMatching):
    """The deterministic stochastic interpolant of Albergo & Vanden-Eijnden (2023): a Sampler and a
    ProbabilityFlow (module docstring). Config: :class:`InterpolantConfig`."""

    config_class: ClassVar[type[FlowMatchingConfig]] = InterpolantConfig

    def path_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(a_t, b_t, a'_t, b'_t), each [B]: I_t = a_t x1 + b_t x0 and ∂_t I_t = a'_t x1 + b'_t x0."""
        if self.config.path == "linear":
            return t, 1.0 - t, torch.ones_like(t), -torch.ones_like(t)
        half_pi = 0.5 * math.pi
        sin, cos = torch.sin(half_pi * t), torch.cos(half_pi * t)
        return sin, cos, half_pi * cos, -half_pi * sin

    def conditional_velocity(self, x: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """∂_t I_t at the x0 with I_t(x0, x1) = x, i.e. a'_t x1 + b'_t (x − a_t x1) / b_t, [B, *shape] (t < 1)."""
        view = (-1, *([1] * (x.dim() - 1)))
        a, b, da, db = (v.reshape(view).to(x.dtype) for v in self.path_coefficients(t))
        return da * x1 + db * (x - a * x1) / b

    def cfm_loss(self, x1: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """G(v̂) / D on the batch: mean over batch and dims of |v̂_t(x_t)|² − 2 ∂_t I_t · v̂_t(x_t)."""
        xt, dt_i = self.conditional_flow(x0, x1, t)
        v = self.net(xt, t)
        return (v.pow(2) - 2.0 * dt_i * v).mean()

    def training_times(self, n: int, generator: torch.Generator) -> Tensor:
        """[n] times t ~ Beta(t_beta) (uniform for (1, 1)) from ``generator`` (CPU).

        Beta(α, β) is drawn as G_α / (G_α + G_β) with Gamma variates from a torch generator seeded by
        ``generator``, so runs stay reproducible from the training seed alone.
        """
        alpha, beta = self.config.t_beta
        if alpha == beta == 1.0:
            return torch.rand(n, generator=generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta)).sample((n,))


def interpolant_linear(**overrides: Any) -> StochasticInterpolant:
    """``interpolant-linear``: :class:`StochasticInterpolant` with I_t = (1 − t) x0 + t x1."""
    return StochasticInterpolant(**pinned("interpolant-linear", "path", "linear", overrides, {"trig": "interpolant-trig"}))


def interpolant_trig(**overrides: Any) -> StochasticInterpolant:
    """``interpolant-trig``: :class:`StochasticInterpolant` with I_t = cos(πt/2) x0 + sin(πt/2) x1."""
    return StochasticInterpolant(**pinned("interpolant-trig", "path", "trig", overrides, {"linear": "interpolant-linear"}))


interpolant_linear.__signature__ = interpolant_trig.__signature__ = inspect.signature(InterpolantConfig)  # type: ignore[attr-defined]

_TINY = {"hidden": 16, "depth": 2, "time_dim": 8, "steps": 5, "batch_size": 32, "sampler": "euler", "sample_steps": 4}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("interpolant-linear", "interpolant", "baselines.interpolant:interpolant_linear",
               "stochastic interpolant (Albergo & Vanden-Eijnden 2023), linear path, the paper's quadratic "
               "objective G: ODE sampler + PF-ODE bpd", tiny_config=dict(_TINY)),
    ModelEntry("interpolant-trig", "interpolant", "baselines.interpolant:interpolant_trig",
               "stochastic interpolant (Albergo & Vanden-Eijnden 2023), trigonometric path cos(pi t/2) x0 + "
               "sin(pi t/2) x1, the paper's quadratic objective G: ODE sampler + PF-ODE bpd", tiny_config=dict(_TINY)),
)
