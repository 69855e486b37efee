"""Log-likelihood of a probability-flow ODE by the instantaneous change of variables.

For dx/dt = f(x, t) carrying the data density p_{t0} at ``t0 = t_span[0]`` to the prior p_{t1} at
``t1 = t_span[1]`` (Song et al. 2021, eq. 13), the log-density obeys d/dt log p_t(x(t)) = -div f
(Chen et al. 2018, eq. 4), hence (Song et al. 2021, eq. 39 and App. D.2)

    log p_{t0}(x) = log p_{t1}(z) + ∫_{t0}^{t1} div f(x(t), t) dt,   z = x(t1).

We integrate the augmented state [x, Δ] with d/dt [x, Δ] = [f, div f], Δ(t0) = 0, whatever the
direction of time (diffusions have t0 < t1, flow matching often t0 = 1 > t1 = 0).

Divergence:
  * ``"exact"``: the trace of ∂f/∂x, one vector-Jacobian product per dimension (D VJPs per
    evaluation; for small D).
  * ``"hutchinson"``: Skilling (1989) / Hutchinson (1990), div f ≈ (1/K) Σ_k ε_kᵀ (∂f/∂x) ε_k with
    K = ``num_probes`` Rademacher or Gaussian probes per example, drawn once from
    ``rng.child("hutchinson")`` before the solve and reused at every evaluation (as score_sde's
    ``likelihood.py``; torchcfm's redraw per call is the pitfall avoided). One VJP per probe.
    Unbiased for log p in expectation over the probes (Grathwohl et al. 2019, FFJORD, sec. 3.1).

Solver: ``harness.core.ode.adaptive`` / ``fixed_step_torchode``, i.e. torchode (Lienen & Günnemann
2022), which keeps one time, step size, step-size controller state and error norm per example.
Example i's value therefore does not depend on its batch-mates (score_sde flattens the batch into
one scipy state, so one sample's bpd depends on the others). The state [x, Δ] is float64 (both
the trajectory and the log-det accumulator); the drift is evaluated in the dtype of ``x`` and its
output cast to float64.

torchode integrates in a normalized time s in [0, S] with t = t0 + (t1 - t0) s / S and
d/ds = (dt/ds) d/dt. Adaptive solves use S = 1; fixed-step solves use S = ``steps`` and ds = 1, so
the grid is exact integers: with raw times, the rounded sum of N steps can fall short of t1 and
torchode 1.0.1 then takes an extra tiny step (observed, e.g. N = 7 on [0, 1]). The mapping is done
here, in ``_Augmented``; ``fixed_step_torchode`` on [0, N] then calls it as is.

NFE conventions. One *evaluation* is one call of ``model.ode_drift`` on the batch, plus
``num_probes`` VJPs (Hutchinson) or D VJPs (exact) through that same call; the drift is never
called a second time for the divergence (score_sde calls it twice). Per example, the NFE is the
evaluations the solver spent on that example, i.e. what it costs solved alone:

  * Euler:  N               (1 per step)
  * Heun:   2N              (both stages every step; torchode does not skip the last correction,
                             so not EDM's 2N - 1)
  * RK4:    4N              (classical RK4; torchode 1.0.1 has none, ``harness.core.ode`` adds the tableau)
  * dopri5: 2 + 6 · n_steps (2 for the initial step-size selection, whose first evaluation is
                             reused as the first stage; 6 new stages per attempted step, accepted
                             or rejected, the 7th being first-same-as-last)

torchode evaluates the whole batch at every call (finished examples with a zero step), so the
batch's ``forward_calls`` equals max(nfe) and torchode's own ``n_f_evals``; both are checked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from harness.core import ode
from harness.core.nfe import NFECounter
from harness.core.protocols import ProbabilityFlow
from harness.core.rng import BatchRNG
from metrics.bpd import nats_to_bpd

logger = logging.getLogger(__name__)

_DIVERGENCES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian")
_ADAPTIVE = ode.ADAPTIVE_METHODS
_FIXED = ode.TORCHODE_FIXED_METHODS


@dataclass(frozen=True)
class ODELikelihoodConfig:
    """How the PF-ODE log-likelihood is computed.

    Attributes:
        divergence: ``"exact"`` trace (D VJPs per evaluation) or ``"hutchinson"`` estimate.
        probe: Hutchinson probe distribution, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        num_probes: probes per example, averaged; fixed per example over the whole solve.
        solver: ``"dopri5"`` (adaptive, torchode ``Dopri5`` + ``IntegralController``) or fixed-step
            ``"euler"``, ``"heun"``, ``"rk4"``.
        rtol, atol: tolerances of the adaptive solver (per-example RMS error norm over [x, Δ]).
        steps: number of equal steps of a fixed-step solver.
        max_steps: an adaptive solve that has not reached ``t_span[1]`` after this many attempted
            steps fails with ValueError.
    """

    divergence: Literal["exact", "hutchinson"] = "hutchinson"
    probe: Literal["rademacher", "gaussian"] = "rademacher"
    num_probes: int = 1
    solver: Literal["dopri5", "euler", "heun", "rk4"] = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int = 100
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        if self.divergence not in _DIVERGENCES:
            raise ValueError(f"divergence must be one of {_DIVERGENCES}, got {self.divergence!r}")
        if self.probe not in _PROBES:
            raise ValueError(f"probe must be one of {_PROBES}, got {self.probe!r}")
        if self.solver not in _ADAPTIVE + _FIXED:
            raise ValueError(f"solver must be one of {_ADAPTIVE + _FIXED}, got {self.solver!r}")
        for name in ("num_probes", "steps", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite float > 0, got {value!r}")

    @property
    def adaptive(self) -> bool:
        return self.solver in _ADAPTIVE

    @property
    def estimator(self) -> str:
        """``"exact"``, ``"hutchinson-rademacher"`` or ``"hutchinson-gaussian"``."""
        return "exact" if self.divergence == "exact" else f"hutchinson-{self.probe}"


@dataclass(frozen=True)
class ODELikelihoodResult:
    """Per-example PF-ODE log-likelihoods and how they were obtained.

    Attributes:
        log_prob: [B] float64, log p(x) in nats (summed over the D dimensions).
        prior_log_prob: [B] float64, log p_{t1}(z) in nats.
        delta_log_prob: [B] float64, ∫_{t0}^{t1} div f dt in nats (``log_prob - prior_log_prob``).
        z: [B, *shape] in the dtype of x, the state at ``t_span[1]``.
        nfe: [B] int64, drift evaluations spent on each example (module docstring).
        forward_calls: drift calls on the whole batch (counted by ``harness.core.nfe.NFECounter``).
        vjp_calls: VJPs through those calls (``num_probes`` or D per call).
        solver_stats: torchode's per-example ``n_steps``, ``n_accepted``, ``n_f_evals`` ([B] int64).
        config: the configuration used.
        t_span: (t0, t1) integrated over.
        probe_stream: the BatchRNG stream the Hutchinson probes came from (None for exact).
    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    z: Tensor
    nfe: Tensor
    forward_calls: int
    vjp_calls: int
    solver_stats: dict[str, Tensor] = field(repr=False)
    config: ODELikelihoodConfig
    t_span: tuple[float, float]
    probe_stream: str | None

    def protocol(self) -> dict[str, object]:
        """What a reader needs to reproduce or compare the number."""
        c = self.config
        out: dict[str, object] = {"estimator": c.estimator,
                                  "num_probes": None if c.divergence == "exact" else c.num_probes,
                                  "probe_stream": self.probe_stream, "solver": c.solver}
        if c.adaptive:
            out.update(rtol=c.rtol, atol=c.atol, max_steps=c.max_steps, error_norm="per-example rms over [x, delta]")
        else:
            out.update(steps=c.steps)
        out.update(t_span=list(self.t_span), state_dtype="float64", library=ode.library(),
                   nfe_meaning="one ode_drift call on the batch; each also does "
                   + ("D VJPs (exact trace)" if c.divergence == "exact" else f"{c.num_probes} VJP(s), one per probe"),
                   forward_calls=self.forward_calls, vjp_calls=self.vjp_calls)
        return out


class _Drift(nn.Module):
    """``model.ode_drift`` as a module, so ``NFECounter`` can count its calls."""

    def __init__(self, model: ProbabilityFlow) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model.ode_drift(x, t)


class _Augmented:
    """d/ds [x, Δ] on the flat float64 state y [B, D + 1] at normalized times s [B] (module docstring).

    A ``harness.core.ode`` drift: ``func(y, s)``, called by the solver on [0, scale].
    """

    def __init__(self, drift: NFECounter, shape: tuple[int, ...], dtype: torch.dtype, t0: float, t1: float,
                 scale: float, probes: Tensor | None) -> None:
        self.drift, self.shape, self.dtype = drift, shape, dtype
        self.t0, self.dt_ds = t0, (t1 - t0) / scale
        self.probes = probes  # [B, K, *shape] or None for the exact trace
        self.bad_t: tuple[Tensor, Tensor] | None = None  # per-example first/last t of a non-finite drift (no sync)

    def __call__(self, y: Tensor, s: Tensor) -> Tensor:
        b = y.shape[0]
        t = self.t0 + self.dt_ds * s  # [B] float64
        with torch.enable_grad():
            x = y[:, :-1].to(self.dtype).reshape(b, *self.shape).detach().requires_grad_(True)
            f = self.drift(x, t.to(self.dtype))
            if f.shape != x.shape:
                raise ValueError(f"ode_drift returned shape {tuple(f.shape)} for x of shape {tuple(x.shape)}")
            div = self._divergence(f, x)
        f = f.detach().reshape(b, -1).to(torch.float64)
        bad = ~(torch.isfinite(f).all(dim=1) & torch.isfinite(div))
        lo, hi = self.bad_t if self.bad_t is not None else (torch.full_like(t, math.inf), torch.full_like(t, -math.inf))
        self.bad_t = (torch.where(bad, torch.minimum(lo, t), lo), torch.where(bad, torch.maximum(hi, t), hi))
        return self.dt_ds * torch.cat([f, div[:, None]], dim=1)

    def _divergence(self, f: Tensor, x: Tensor) -> Tensor:
        """div f [B] float64: exact trace (D VJPs) or the Hutchinson mean over the fixed probes."""
        b = x.shape[0]
        if not f.requires_grad:  # the drift does not depend on x at all
            return torch.zeros(b, dtype=torch.float64, device=x.device)
        if self.probes is None:
            d = f[0].numel()
            flat = f.reshape(b, d)
            div = torch.zeros(b, dtype=torch.float64, device=x.device)
            for j in range(d):
                (g,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=j < d - 1)
                div += g.reshape(b, d)[:, j].to(torch.float64)
            self.drift.count.vjp_calls += d
            return div
        k = self.probes.shape[1]
        total = torch.zeros(b, dtype=torch.float64, device=x.device)
        for i in range(k):
            eps = self.probes[:, i]
            (g,) = torch.autograd.grad(f, x, grad_outputs=eps, retain_graph=i < k - 1)
            total += (g * eps).reshape(b, -1).sum(dim=1, dtype=torch.float64)
        self.drift.count.vjp_calls += k
        return total / k


def _draw_probes(config: ODELikelihoodConfig, rng: BatchRNG, shape: tuple[int, ...], x: Tensor) -> tuple[Tensor | None, str | None]:
    """[B, K, *shape] probes in x's dtype and device, drawn once per example, and their stream."""
    if config.divergence == "exact":
        return None, None
    probe_rng = rng.child("hutchinson")
    draw = probe_rng.rademacher if config.probe == "rademacher" else probe_rng.normal
    return draw((config.num_probes, *shape)).to(device=x.device, dtype=x.dtype), probe_rng.stream


def ode_log_likelihood(model: ProbabilityFlow, x: Tensor, *, config: ODELikelihoodConfig, rng: BatchRNG) -> ODELikelihoodResult:
    """Per-example log p(x) under a probability-flow ODE (module docstring for the method).

    Args:
        model: a ``ProbabilityFlow``: ``ode_drift(x, t)`` with t of shape [B], ``prior_log_prob``,
            ``t_span = (t_data, t_prior)``. Examples must not interact inside the drift (no
            batch statistics), or neither the divergence nor batch independence hold.
        x: [B, *shape] float tensor in model space (dequantized and scaled by the caller). The
            solve runs on x's device; the drift sees x's dtype.
        config: estimator and solver settings.
        rng: per-example randomness for the B examples (only ``rng.child("hutchinson")`` is used).

    Returns:
        ``ODELikelihoodResult`` with ``log_prob`` [B] float64 nats and per-example ``nfe``.

    Raises:
        TypeError: ``model`` is not a ``ProbabilityFlow``.
        ValueError: bad shapes, a NaN/Inf drift, divergence or result, or an adaptive solve that
            fails to reach ``t_span[1]``.
    """
    if not isinstance(model, ProbabilityFlow):
        raise TypeError(f"{type(model).__name__} does not implement ProbabilityFlow (t_span, ode_drift, prior_log_prob)")
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [B, *shape], got dtype {x.dtype} and shape {tuple(x.shape)}")
    if len(rng) != x.shape[0]:
        raise ValueError(f"rng covers {len(rng)} examples but x has {x.shape[0]}")
    t0, t1 = (float(t) for t in model.t_span)
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 != t1):
        raise ValueError(f"model.t_span must be two distinct finite times, got {model.t_span}")
    b, shape, dim = x.shape[0], tuple(x.shape[1:]), x[0].numel()
    probes, stream = _draw_probes(config, rng, shape, x)
    drift = NFECounter(_Drift(model))
    scale = 1.0 if config.adaptive else float(config.steps)
    func = _Augmented(drift, shape, x.dtype, t0, t1, scale, probes)

    with torch.inference_mode(False), torch.no_grad():
        y0 = torch.cat([x.detach().reshape(b, dim).to(torch.float64), x.new_zeros(b, 1, dtype=torch.float64)], dim=1)
        if config.adaptive:
            sol = ode.adaptive(func, y0, 0.0, scale, rtol=config.rtol, atol=config.atol, max_steps=config.max_steps)
        else:
            sol = ode.fixed_step_torchode(func, y0, 0.0, scale, method=config.solver, steps=config.steps)
        y1 = sol.x
        z = y1[:, :-1].to(x.dtype).reshape(b, *shape)
        prior = model.prior_log_prob(z).to(torch.float64).reshape(b)
    delta = y1[:, -1]
    log_prob = prior + delta

    if func.bad_t is not None and bool(torch.isfinite(func.bad_t[0]).any()):
        lo, hi = func.bad_t
        bad = torch.isfinite(lo)
        raise ValueError(f"ode_drift or its divergence was NaN/Inf for {int(bad.sum())} of {b} examples, "
                         f"at t in [{float(lo[bad].min()):.6g}, {float(hi[bad].max()):.6g}]")
    failed = sol.failed
    if failed.any():
        codes = sorted(set(sol.status[failed].tolist()))
        raise ValueError(f"the {config.solver} solve did not reach t={t1} for {int(failed.sum())} of {b} examples "
                         f"(torchode status {codes}; 3 = max_steps={config.max_steps} reached)")
    nonfinite = ~torch.isfinite(log_prob)
    if nonfinite.any():
        raise ValueError(f"log p(x) is NaN/Inf for {int(nonfinite.sum())} of {b} examples (prior_log_prob or the solution)")

    stats = {"n_steps": sol.n_steps, "n_accepted": sol.n_accepted, "n_f_evals": sol.n_f_evals}
    nfe = sol.nfe
    calls = drift.count.forward_calls
    if int(nfe.max()) != calls or bool((stats["n_f_evals"] != calls).any()):
        raise RuntimeError(f"NFE bookkeeping mismatch: per-example max {int(nfe.max())}, counted calls {calls}, "
                           f"torchode n_f_evals {stats['n_f_evals'].unique().tolist()} ({ode.library()})")
    logger.debug("PF-ODE likelihood: %d examples, %s, %d drift calls, max NFE %d", b, config.solver, calls, int(nfe.max()))
    return ODELikelihoodResult(log_prob=log_prob, prior_log_prob=prior, delta_log_prob=delta, z=z, nfe=nfe,
                               forward_calls=calls, vjp_calls=drift.count.vjp_calls, solver_stats=stats,
                               config=config, t_span=(t0, t1), probe_stream=stream)


def ode_bpd(model: ProbabilityFlow, x: Tensor, *, config: ODELikelihoodConfig, rng: BatchRNG,
            offset_bits: float = 0.0) -> tuple[Tensor, ODELikelihoodResult]:
    """Bits/dim from ``ode_log_likelihood``: ``-log p(x) / (D ln 2) + offset_bits``.

    Args:
        offset_bits: ``metrics.bpd.dequantization_offset_bits(value_range)`` for uniformly
            dequantized 8-bit data (7 for [-1, 1], as score_sde's offset), else 0.

    Returns:
        (bpd [B] float64, the full ``ODELikelihoodResult``).
    """
    result = ode_log_likelihood(model, x, config=config, rng=rng)
    return nats_to_bpd(result.log_prob, x[0].numel(), offset_bits=offset_bits), result
