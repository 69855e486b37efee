"""harness.core.ode against closed forms: dx/dt = a·x has x(t) = x(t0)·e^{a (t − t0)}.

Orders of convergence (Hairer, Nørsett & Wanner, Solving ODEs I, sec. II.1): halving h divides the
global error by ~2 (Euler), ~4 (midpoint, Heun), ~16 (RK4). dopri5 (torchode, per-example step
control) lands within its tolerance and takes more steps only for the examples that need them.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from harness.core import ode

pytestmark = pytest.mark.usefixtures("one_thread")

A = 0.7  # growth rate of the test ODE


def linear(rate: float | Tensor, calls: list[Tensor] | None = None):
    """drift(x, t) = rate · x (rate a float or one rate per example, [B]); records each t if asked."""

    def drift(x: Tensor, t: Tensor) -> Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == torch.float64 and t.device == x.device
        if calls is not None:
            calls.append(t.clone())
        r = torch.as_tensor(rate, dtype=x.dtype, device=x.device)
        return (r.reshape(-1, *([1] * (x.dim() - 1))) if r.dim() else r) * x

    return drift


def x0_batch(b: int = 4, shape: tuple[int, ...] = (3,)) -> Tensor:
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def max_error(method: str, steps: int, t0: float = 0.0, t1: float = 1.0) -> float:
    x0 = x0_batch()
    x1 = ode.fixed_step(linear(A), x0, t0, t1, method=method, steps=steps)
    return float((x1 - x0 * math.exp(A * (t1 - t0))).abs().max())


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_fixed_step_error_shrinks_at_the_method_order(method: str, order: int) -> None:
    ratio = max_error(method, 20) / max_error(method, 40)
    assert 2**order * 0.85 < ratio < 2**order * 1.15, ratio  # measured 1.97, 3.95, 3.95, 15.8


def test_fixed_step_accuracy_and_backward_time() -> None:
    assert max_error("rk4", 100) < 1e-8  # measured 6e-11
    assert max_error("euler", 100) > 1e-3  # measured 1.1e-2 (~a² h/2 · max |x(1)|)
    # t1 < t0 integrates backwards: x(0) = x(1) e^{-a}
    x1 = x0_batch()
    back = ode.fixed_step(linear(A), x1, 1.0, 0.0, method="rk4", steps=100)
    torch.testing.assert_close(back, x1 * math.exp(-A), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ode.FIXED_STEP_METHODS)
def test_drift_gets_one_float64_time_per_example_on_the_grid(method: str) -> None:
    calls: list[Tensor] = []
    x0 = x0_batch(5).to(torch.float32)
    x1 = ode.fixed_step(linear(A, calls), x0, 0.5, 2.5, method=method, steps=4)
    assert x1.dtype == torch.float32 and x1.shape == x0.shape
    assert len(calls) == 4 * ode.EVALS_PER_STEP[method]
    grid, half = [0.5, 1.0, 1.5, 2.0], [0.75, 1.25, 1.75, 2.25]  # t_k = 0.5 + k h, h = 0.5; and t_k + h/2
    expected = {"euler": grid, "midpoint": grid + half, "heun": [*grid, 2.5], "rk4": [*grid, *half, 2.5]}[method]
    assert sorted({float(t[0]) for t in calls}) == sorted(expected)
    assert all(bool((t == t[0]).all()) for t in calls)


def test_trajectory_shape_ends_and_euler_states() -> None:
    x0 = x0_batch(3, (2, 4))
    traj = ode.fixed_step_trajectory(linear(A), x0, 0.0, 1.0, method="euler", steps=10)
    assert traj.shape == (11, 3, 2, 4) and traj.dtype == x0.dtype
    assert torch.equal(traj[0], x0)
    assert torch.equal(traj[-1], ode.fixed_step(linear(A), x0, 0.0, 1.0, method="euler", steps=10))
    # Euler on dx/dt = a x: x_k = x0 (1 + a h)^k
    k = torch.arange(11, dtype=torch.float64).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(traj, x0 * (1 + A / 10) ** k, rtol=1e-12, atol=1e-12)
    heun = ode.fixed_step_trajectory(linear(A), x0, 0.0, 1.0, method="heun", steps=3)
    assert heun.shape == (4, 3, 2, 4)
    assert torch.equal(heun[-1], ode.fixed_step(linear(A), x0, 0.0, 1.0, method="heun", steps=3))


def test_fixed_step_validation() -> None:
    x0 = x0_batch()
    with pytest.raises(ValueError, match="method must be one of"):
        ode.fixed_step(linear(A), x0, 0.0, 1.0, method="dopri5", steps=3)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            ode.fixed_step(linear(A), x0, 0.0, 1.0, method="euler", steps=bad)
    with pytest.raises(ValueError, match="finite"):
        ode.fixed_step_trajectory(linear(A), x0, 0.0, math.inf, method="euler", steps=3)


def test_adaptive_is_within_tolerance_and_counts_evaluations() -> None:
    calls: list[Tensor] = []
    x0 = x0_batch().to(torch.float32)
    res = ode.adaptive(linear(A, calls), x0, 0.0, 1.0, rtol=1e-8, atol=1e-8, max_steps=1000)
    assert isinstance(res, ode.SolverResult) and res.method == "dopri5"
    assert res.x.dtype == torch.float64 and res.x.shape == x0.shape
    assert not bool(res.failed.any()) and bool((res.status == 0).all())
    # the drift sees float32 states, so the error floor is float32 round-off, not the tolerance
    assert float((res.x - x0.double() * math.exp(A)).abs().max()) < 1e-5
    assert torch.equal(res.nfe, 2 + 6 * res.n_steps) and bool((res.n_accepted <= res.n_steps).all())
    assert len(calls) == int(res.nfe.max()) and bool((res.n_f_evals == len(calls)).all())
    x64 = ode.adaptive(linear(A), x0_batch(), 0.0, 1.0, rtol=1e-10, atol=1e-10, max_steps=1000)
    assert float((x64.x - x0_batch() * math.exp(A)).abs().max()) < 1e-8
    back = ode.adaptive(linear(A), x0_batch(), 1.0, 0.0, rtol=1e-10, atol=1e-10, max_steps=1000)
    torch.testing.assert_close(back.x, x0_batch() * math.exp(-A), rtol=1e-8, atol=1e-10)


def test_adaptive_steps_are_per_example() -> None:
    """One stiffer example (rate −40) takes more steps; its batch-mates keep the steps they take alone.

    Values agree to round-off only: torchode's einsum rounds differently with the batch size.
    """
    x0 = torch.ones(4, 2, dtype=torch.float64)
    rates = torch.tensor([1.0, 1.0, -40.0, 1.0], dtype=torch.float64)
    res = ode.adaptive(linear(rates), x0, 0.0, 1.0, rtol=1e-6, atol=1e-6, max_steps=10_000)
    steps = res.n_steps.tolist()
    assert steps[0] == steps[1] == steps[3] < steps[2], steps
    alone = ode.adaptive(linear(1.0), x0[:1], 0.0, 1.0, rtol=1e-6, atol=1e-6, max_steps=10_000)
    assert int(alone.n_steps[0]) == steps[0]
    torch.testing.assert_close(alone.x[0], res.x[0], rtol=1e-13, atol=0.0)  # measured 2e-15 relative
    exact = x0 * torch.exp(rates)[:, None]
    torch.testing.assert_close(res.x, exact, rtol=1e-4, atol=1e-6)
    # the whole batch is evaluated at every call: n_f_evals is the slowest example's nfe
    assert bool((res.n_f_evals == int(res.nfe.max())).all()) and int(res.nfe[0]) < int(res.nfe[2])


def test_adaptive_reports_failure_without_raising() -> None:
    res = ode.adaptive(linear(torch.tensor([1.0, -400.0], dtype=torch.float64)), torch.ones(2, 1, dtype=torch.float64),
                       0.0, 1.0, rtol=1e-8, atol=1e-8, max_steps=5)
    # torchode stops the whole batch at the first failure; the stiff example reached max_steps (status 3)
    assert bool(res.failed[1]) and int(res.status[1]) == 3
    with pytest.raises(ValueError, match="rtol"):
        ode.adaptive(linear(A), x0_batch(), 0.0, 1.0, rtol=0.0, atol=1e-6, max_steps=10)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ode.adaptive(linear(A), x0_batch(), 0.0, 1.0, rtol=1e-6, atol=1e-6, max_steps=0)
    with pytest.raises(ValueError, match="differ"):
        ode.adaptive(linear(A), x0_batch(), 1.0, 1.0, rtol=1e-6, atol=1e-6, max_steps=10)


@pytest.mark.parametrize("method", ode.TORCHODE_FIXED_METHODS)
def test_fixed_step_torchode_matches_fixed_step_to_round_off(method: str) -> None:
    x0 = x0_batch()
    for t0, t1, steps in ((0.0, 1.0, 7), (0.0, 7.0, 7), (1.0, 0.25, 10)):  # 7 steps on [0, 1]: an inexact grid
        res = ode.fixed_step_torchode(linear(A), x0, t0, t1, method=method, steps=steps)
        assert res.n_steps.tolist() == [steps] * 4 and not bool(res.failed.any())
        assert torch.equal(res.nfe, torch.full((4,), ode.EVALS_PER_STEP[method] * steps))
        plain = ode.fixed_step(linear(A), x0, t0, t1, method=method, steps=steps)
        torch.testing.assert_close(res.x, plain, rtol=1e-13, atol=1e-13)
    assert float((ode.fixed_step_torchode(linear(A), x0, 0.0, 1.0, method="rk4", steps=100).x
                  - x0 * math.exp(A)).abs().max()) < 1e-8
    with pytest.raises(ValueError, match="method must be one of"):
        ode.fixed_step_torchode(linear(A), x0, 0.0, 1.0, method="midpoint", steps=3)
    assert ode.library().startswith("torchode ")
