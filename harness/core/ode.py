"""ODE integration for the whole project: fixed-step samplers and per-example torchode solves.

Every ODE of genbench is integrated here: the flow-matching samplers and trajectories
(``baselines.flow_matching``), the probability-flow sampler of ``baselines.score_sde``, the Euler
trajectories of ``metrics.straightness`` and the PF-ODE likelihood of ``metrics.likelihood_ode``.

Conventions (all functions):

* ``drift(x, t) -> dx/dt``: x [B, *shape] the state, t [B] float64 (one time per example, on x's
  device), result [B, *shape]. A drift casts t to whatever its network needs; examples must not
  interact inside it (no batch statistics).
* ``x0`` [B, *shape] is the state at ``t0``; the solve runs to ``t1``, in either direction of
  time (t1 < t0 integrates backwards). Times are Python floats, in the caller's units.

Two families:

* :func:`fixed_step` / :func:`fixed_step_trajectory`: N equal steps h = (t1 − t0)/N on the grid
  t_k = t0 + k h, batch-synchronous, plain PyTorch in the dtype of x0 (NFE = N · EVALS_PER_STEP).
  The arithmetic is written once, below, and every sampler's numbers depend on it bit for bit:
  change an expression and committed samples change.
* :func:`adaptive` (Dormand–Prince 5(4)) and :func:`fixed_step_torchode` (the torchode Euler, Heun
  and RK4 tableaux on a fixed grid): torchode (Lienen & Günnemann 2022), which keeps one time, step
  size, controller state and error norm *per example*, so example i's result does not depend on
  its batch-mates. The state is float64 (flattened to [B, D]); the drift sees it reshaped to
  [B, *shape] in x0's dtype and its output is cast back to float64. Both return a
  :class:`SolverResult` with torchode's per-example statistics.

NFE per example (``EVALS_PER_STEP``, ``INITIAL_EVALS``): Euler N, midpoint 2N, Heun 2N (both stages
every step, no last-step shortcut), RK4 4N; dopri5 2 + 6 · n_steps (2 for torchode's initial
step-size selection, whose first evaluation is reused as the first stage; 6 new stages per
attempted step, accepted or rejected, the 7th being first-same-as-last). torchode evaluates the
whole batch at every call (finished examples with a zero step), so the batch's drift calls equal
max(nfe) = torchode's ``n_f_evals``.

This module imports only torch, torchode (lazily: it costs ~0.5 s) and ``harness.core``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ADAPTIVE_METHODS", "Drift", "EVALS_PER_STEP", "FIXED_STEP_METHODS", "INITIAL_EVALS", "SolverResult",
           "TORCHODE_FIXED_METHODS", "adaptive", "fixed_step", "fixed_step_torchode", "fixed_step_trajectory", "library"]

Drift = Callable[[Tensor, Tensor], Tensor]
"""``drift(x [B, *shape], t [B] float64) -> dx/dt [B, *shape]``."""

FIXED_STEP_METHODS = ("euler", "midpoint", "heun", "rk4")
"""Methods of :func:`fixed_step` and :func:`fixed_step_trajectory`."""
TORCHODE_FIXED_METHODS = ("euler", "heun", "rk4")
"""Methods of :func:`fixed_step_torchode` (torchode 1.0.1 has no midpoint)."""
ADAPTIVE_METHODS = ("dopri5",)
"""Methods of :func:`adaptive`."""
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 6}
"""Drift evaluations per (attempted) step."""
INITIAL_EVALS = {"euler": 0, "midpoint": 0, "heun": 0, "rk4": 0, "dopri5": 2}
"""Drift evaluations before the first step (dopri5: torchode's initial step-size selection)."""


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return steps


def _check_span(t0: float, t1: float) -> tuple[float, float]:
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"t0 and t1 must be finite, got {t0}, {t1}")
    return t0, t1


# ----- fixed step, plain PyTorch -------------------------------------------------------------------


def _fixed_steps(drift: Drift, x0: Tensor, t0: float, t1: float, method: str, steps: int) -> Iterator[Tensor]:
    """Yield x_1, ..., x_N of N equal steps (the formulas of :func:`fixed_step`)."""
    if method not in FIXED_STEP_METHODS:
        raise ValueError(f"method must be one of {FIXED_STEP_METHODS}, got {method!r}")
    steps = _check_steps(steps)
    t0, t1 = _check_span(t0, t1)
    h = (t1 - t0) / steps
    b, device = x0.shape[0], x0.device

    def at(t: float) -> Tensor:
        return torch.full((b,), t, dtype=torch.float64, device=device)

    x = x0
    for k in range(steps):
        t = t0 + k * h
        k1 = drift(x, at(t))
        if method == "euler":
            x = x + h * k1
        elif method == "midpoint":
            x = x + h * drift(x + 0.5 * h * k1, at(t + 0.5 * h))
        elif method == "heun":
            x = x + 0.5 * h * (k1 + drift(x + h * k1, at(t + h)))
        else:
            k2 = drift(x + 0.5 * h * k1, at(t + 0.5 * h))
            k3 = drift(x + 0.5 * h * k2, at(t + 0.5 * h))
            k4 = drift(x + h * k3, at(t + h))
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        yield x


def fixed_step(drift: Drift, x0: Tensor, t0: float, t1: float, *,
               method: Literal["euler", "midpoint", "heun", "rk4"], steps: int) -> Tensor:
    """x(t1) of dx/dt = drift(x, t) from x(t0) = x0 by N = ``steps`` equal steps h = (t1 − t0)/N.

    With t = t_k = t0 + k h and x = x_k (Hairer, Nørsett & Wanner, *Solving ODEs I*, sec. II.1):

    * ``"euler"``: x ← x + h k1, k1 = drift(x, t) (1 evaluation per step);
    * ``"midpoint"`` (explicit midpoint): x ← x + h drift(x + h/2 k1, t + h/2) (2);
    * ``"heun"`` (Heun's 2nd-order / explicit trapezoidal; Karras et al. 2022, Alg. 1 without the
      last-step shortcut): x ← x + h/2 (k1 + drift(x + h k1, t + h)) (2);
    * ``"rk4"`` (classical Runge–Kutta): k2 = drift(x + h/2 k1, t + h/2), k3 = drift(x + h/2 k2,
      t + h/2), k4 = drift(x + h k3, t + h), x ← x + h/6 (k1 + 2 k2 + 2 k3 + k4) (4).

    h and the times are Python floats (float64); the state stays in x0's dtype and device.

    Args:
        drift: ``drift(x [B, *shape], t [B] float64) -> [B, *shape]``.
        x0: [B, *shape] state at t0.
        t0, t1: start and end times (t1 < t0 integrates backwards: h < 0).
        method: one of :data:`FIXED_STEP_METHODS`.
        steps: N >= 1.

    Returns:
        x_N ≈ x(t1), [B, *shape] in x0's dtype.
    """
    x = x0
    for x in _fixed_steps(drift, x0, t0, t1, method, steps):
        pass
    return x


def fixed_step_trajectory(drift: Drift, x0: Tensor, t0: float, t1: float, *,
                          method: Literal["euler", "midpoint", "heun", "rk4"], steps: int) -> Tensor:
    """The states x_0 = x0, x_1, ..., x_N of :func:`fixed_step` on the grid t_k = t0 + k (t1 − t0)/N.

    Returns:
        [N + 1, B, *shape] in x0's dtype: first x0, last the state at t1 (equal to ``fixed_step``'s).
    """
    return torch.stack([x0, *_fixed_steps(drift, x0, t0, t1, method, steps)])


# ----- torchode: per-example solves ------------------------------------------------------------------


@dataclass(frozen=True)
class SolverResult:
    """A torchode solve of :func:`adaptive` or :func:`fixed_step_torchode`, per example.

    Attributes:
        x: [B, *shape] float64, the state at t1 (at the last time reached for a failed example).
        n_steps: [B] int64 (CPU), attempted steps, accepted or rejected.
        n_accepted: [B] int64 (CPU), accepted steps.
        n_f_evals: [B] int64 (CPU), torchode's count of drift calls on the batch (the same for every
            example: the whole batch is evaluated at every call).
        status: [B] int64 (CPU), torchode ``Status`` codes: 0 success, 3 ``max_steps`` reached, 4 an
            infinite error norm, 2 the step size underflowed, 1 other.
        method: ``"dopri5"``, ``"euler"``, ``"heun"`` or ``"rk4"``.
    """

    x: Tensor
    n_steps: Tensor
    n_accepted: Tensor
    n_f_evals: Tensor
    status: Tensor
    method: str

    @property
    def nfe(self) -> Tensor:
        """[B] int64: drift evaluations spent on each example, ``INITIAL_EVALS + EVALS_PER_STEP · n_steps``."""
        return INITIAL_EVALS[self.method] + EVALS_PER_STEP[self.method] * self.n_steps

    @property
    def failed(self) -> Tensor:
        """[B] bool: the examples whose solve did not succeed (``status != 0``)."""
        return self.status != 0


def library() -> str:
    """``"torchode <version>"``: the library behind :func:`adaptive` and :func:`fixed_step_torchode`."""
    import torchode

    return f"torchode {torchode.__version__}"


@functools.cache
def _torchode_methods() -> dict[str, type]:
    """torchode's step method classes by name; RK4 is added here (torchode 1.0.1 has none)."""
    import torchode as to
    from torchode.interpolation import ThirdOrderPolynomialInterpolation
    from torchode.single_step_methods.runge_kutta import ButcherTableau, ERKInterpolationData, ExplicitRungeKutta

    class RK4(ExplicitRungeKutta):
        """Classical 4th-order Runge–Kutta, tableau c = (0, ½, ½, 1), b = (⅙, ⅓, ⅓, ⅙); fixed steps only."""

        TABLEAU = ButcherTableau.from_lists(c=[0.0, 0.5, 0.5, 1.0], a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
                                            b=[1 / 6, 1 / 3, 1 / 3, 1 / 6], b_err=[0.0, 0.0, 0.0, 0.0])

        def __init__(self, term: to.ODETerm | None = None) -> None:
            super().__init__(term, RK4.TABLEAU)

        def convergence_order(self) -> int:
            return 4

        def build_interpolation(self, data: ERKInterpolationData) -> ThirdOrderPolynomialInterpolation:
            return ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0, data.y1, data.k)

    return {"dopri5": to.Dopri5, "euler": to.Euler, "heun": to.Heun, "rk4": RK4}


def _torchode_solve(drift: Drift, x0: Tensor, t0: float, t1: float, *, method: str, rtol: float | None = None,
                    atol: float | None = None, max_steps: int | None = None, steps: int | None = None) -> SolverResult:
    import torchode as to

    if x0.dim() < 2 or not x0.is_floating_point():
        raise ValueError(f"x0 must be a float tensor [B, *shape], got dtype {x0.dtype} and shape {tuple(x0.shape)}")
    t0, t1 = _check_span(t0, t1)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got {t0}")
    b, shape, dtype, device = x0.shape[0], tuple(x0.shape[1:]), x0.dtype, x0.device

    def f(t: Tensor, y: Tensor) -> Tensor:
        # state, times and error norms in float64; the drift in x0's dtype
        return drift(y.reshape(b, *shape).to(dtype), t).reshape(b, -1).to(torch.float64)

    term = to.ODETerm(f)
    step_method = _torchode_methods()[method](term=term)
    if steps is None:
        controller = to.IntegralController(atol=atol, rtol=rtol, term=term).to(device)
        solver, dt0 = to.AutoDiffAdjoint(step_method, controller, max_steps=max_steps), None
    else:
        solver = to.AutoDiffAdjoint(step_method, to.FixedStepController())
        dt0 = torch.full((b,), (t1 - t0) / steps, dtype=torch.float64, device=device)
    t_start = torch.full((b,), t0, dtype=torch.float64, device=device)
    problem = to.InitialValueProblem(x0.reshape(b, -1).to(torch.float64), t_start, torch.full_like(t_start, t1))
    sol = solver.solve(problem, term=term, dt0=dt0)
    stats = {k: sol.stats[k].to("cpu", torch.long) for k in ("n_steps", "n_accepted", "n_f_evals")}
    return SolverResult(x=sol.ys[:, -1].reshape(b, *shape), status=sol.status.to("cpu", torch.long), method=method,
                        **stats)


def adaptive(drift: Drift, x0: Tensor, t0: float, t1: float, *, rtol: float, atol: float,
             max_steps: int) -> SolverResult:
    """Solve dx/dt = drift(x, t) from x(t0) = x0 to t1 with adaptive Dormand–Prince 5(4), per example.

    Dormand & Prince (1980) through torchode's ``Dopri5`` with its ``IntegralController``: per
    example, a step is accepted when the error ratio r = RMS over the D state dimensions of
    e_j / (atol + rtol · max(|y0_j|, |y1_j|)) is < 1 (e the embedded 4th-order error estimate), and
    the next step size is h · clip(0.9 · r^(−1/5), 0.2, 10), capped at |t1 − t0|; the first step
    comes from torchode's version of the initial-step heuristic of Hairer, Nørsett & Wanner,
    *Solving ODEs I*, sec. II.4 (2 evaluations). The state
    (flattened to [B, D]), the times and the error norms are float64; the drift sees the state in
    x0's dtype. Runs under the caller's grad mode (wrap in ``torch.no_grad()`` for sampling).

    Args:
        drift: ``drift(x [B, *shape], t [B] float64) -> [B, *shape]``.
        x0: [B, *shape] float state at t0.
        t0, t1: start and end times, t0 != t1 (either direction).
        rtol, atol: tolerances of the per-example error norm.
        max_steps: attempted steps after which an unfinished example stops with status 3.

    Returns:
        :class:`SolverResult` with ``method="dopri5"``; check ``failed`` (this function does not raise).
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return _torchode_solve(drift, x0, t0, t1, method="dopri5", rtol=rtol, atol=atol, max_steps=_check_steps(max_steps))


def fixed_step_torchode(drift: Drift, x0: Tensor, t0: float, t1: float, *, method: Literal["euler", "heun", "rk4"],
                        steps: int) -> SolverResult:
    """N = ``steps`` equal steps h = (t1 − t0)/N through torchode (``FixedStepController``), per example.

    Same methods and NFE as :func:`fixed_step` (Euler; Heun with torchode's tableau; RK4 with the
    classical tableau), with :func:`adaptive`'s float64 state and :class:`SolverResult`, so one
    caller can switch between fixed and adaptive solves (``metrics.likelihood_ode``). torchode sums
    the stages with ``einsum``, so Heun and RK4 agree with :func:`fixed_step` only to round-off.

    torchode advances its time by t ← t + h, and on an inexact grid the rounded sum of N steps can
    fall short of t1, so torchode 1.0.1 takes an extra tiny step (observed for N = 7 on [0, 1]).
    The solve therefore runs on the exact grid s = 0, 1, ..., N (ds = 1) with t = t0 + h s and the
    drift scaled by dt/ds = h, in float64 (Hairer et al., *Solving ODEs I*: any affine change of
    the time variable); on [0, N] (h = 1) this is the identity and the drift is called as is.

    Returns:
        :class:`SolverResult` (``n_steps`` = N for every example).
    """
    if method not in TORCHODE_FIXED_METHODS:
        raise ValueError(f"method must be one of {TORCHODE_FIXED_METHODS}, got {method!r}")
    steps = _check_steps(steps)
    t0, t1 = _check_span(t0, t1)
    h = (t1 - t0) / steps
    if t0 == 0.0 and h == 1.0:
        f = drift
    else:
        def f(x: Tensor, s: Tensor) -> Tensor:
            return h * drift(x, t0 + h * s).to(torch.float64)
    result = _torchode_solve(f, x0, 0.0, float(steps), method=method, steps=steps)
    if bool((result.n_steps != steps).any()):
        raise RuntimeError(f"torchode took {sorted(set(result.n_steps.tolist()))} steps instead of {steps} "
                           f"({library()}; the grid 0, 1, ..., N should be exact)")
    return result
