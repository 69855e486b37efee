"""Benchmark: PF-ODE likelihood through genbench (torchode, per-example steps) vs torchdiffeq.

Both sides compute the same quantity for the same model, probes and tolerances: Hutchinson
(Rademacher, one probe per example, fixed over the solve), dopri5, rtol = atol = 1e-5, one
``ode_drift`` call plus one VJP per evaluation.

* genbench: ``metrics.likelihood_ode.ode_log_likelihood`` (torchode, per-example step size and
  error norm, float64 state).
* torchdiffeq: ``torchdiffeq.odeint`` on the batch-shared augmented state ``(x, log_det)`` in the
  model dtype, as ``facebookresearch/flow_matching``'s ``ODESolver.compute_likelihood`` does: one
  step size and error norm for the whole batch, so example i's value depends on the batch.

The model (``MLPFlow``) is a VP probability flow at D = 784 (MNIST size): a diagonal-Gaussian score
for realistic stiffness near t = 0 plus a small time-conditioned MLP with seeded random weights for
realistic cost per call (timing does not depend on the weight values). Not a test: timings
live here, never in assertions. Usage::

    python benchmarks/bench_likelihood_ode.py [--samples 64] [--dim 784] [--hidden 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class MLPFlow(nn.Module):
    """A VP-SDE probability flow (Song et al. 2021, eq. 13) whose score is a diagonal Gaussian's plus an MLP.

    dx/dt = -½β(t)x - ½β(t)·score(x, t) + 0.1·MLP([x, t]), β(t) = 0.1 + 19.9t, data at t = 1e-5,
    N(0, I) prior at t = 1. The Gaussian part (per-dimension stds in [0.01, 0.5]) gives the stiffness
    near t = 0 of a real image model (~70 dopri5 evaluations at tol 1e-5); the MLP
    (D+1 → hidden → hidden → D, SiLU) gives a realistic cost per call.
    """

    def __init__(self, dim: int, hidden: int, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's global RNG
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, dim))
            self.register_buffer("mu", torch.rand(dim) * 2 - 1)
            self.register_buffer("std", 0.01 + 0.49 * torch.rand(dim))
        self.t_span = (1e-5, 1.0)

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        t = t[:, None].to(x.dtype)
        beta, a = 0.1 + 19.9 * t, torch.exp(-0.5 * (0.1 * t + 9.95 * t**2))
        score = -(x - a * self.mu) / (a**2 * self.std**2 + 1 - a**2)
        return -0.5 * beta * (x + score) + 0.1 * self.net(torch.cat([x, t], dim=1))

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def torchdiffeq_log_likelihood(model: MLPFlow, x: Tensor, probes: Tensor, rtol: float, atol: float) -> tuple[Tensor, int]:
    """flow_matching-style batch-shared solve: returns (log p [B] nats, drift calls)."""
    from torchdiffeq import odeint

    calls = 0

    def func(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal calls
        calls += 1
        with torch.enable_grad():
            xt = state[0].detach().requires_grad_(True)
            f = model.ode_drift(xt, t.expand(xt.shape[0]))
            (g,) = torch.autograd.grad(f, xt, grad_outputs=probes)
        return f.detach(), (g * probes).sum(1)

    t = torch.tensor(model.t_span, dtype=x.dtype)
    with torch.no_grad():
        xs, deltas = odeint(func, (x, x.new_zeros(x.shape[0])), t, method="dopri5", rtol=rtol, atol=atol)
        return model.prior_log_prob(xs[-1]).double() + deltas[-1].double(), calls


def _median_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function, the repeats interleaved so load drift hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    from harness.core.rng import BatchRNG
    from metrics.bpd import nats_to_bpd
    from metrics.likelihood_ode import ODELikelihoodConfig, ode_log_likelihood

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    model = MLPFlow(args.dim, args.hidden)
    rng = BatchRNG(0, range(args.samples))
    x = model.mu + model.std * rng.child("data").normal((args.dim,))
    cfg = ODELikelihoodConfig(divergence="hutchinson", probe="rademacher", solver="dopri5", rtol=args.tol, atol=args.tol)
    probes = rng.child("hutchinson").rademacher((1, args.dim))[:, 0]  # the very probes genbench draws

    ours = ode_log_likelihood(model, x, config=cfg, rng=rng)
    ref, ref_calls = torchdiffeq_log_likelihood(model, x, probes, args.tol, args.tol)
    t_ours, t_ref = _median_times([lambda: ode_log_likelihood(model, x, config=cfg, rng=rng),
                                   lambda: torchdiffeq_log_likelihood(model, x, probes, args.tol, args.tol)], args.repeats)

    n = args.samples
    gap = (nats_to_bpd(ours.log_prob, args.dim) - nats_to_bpd(ref, args.dim)).abs()
    print(f"PF-ODE likelihood, VP Gaussian+MLP drift D={args.dim} hidden={args.hidden}, {n} samples, Hutchinson-Rademacher x1, "
          f"dopri5 rtol=atol={args.tol:g}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"  genbench (torchode, per-example control): {1e3 * t_ours / n:8.2f} ms/sample   "
          f"drift calls {ours.forward_calls}, per-example NFE mean {ours.nfe.double().mean():.1f} "
          f"(min {int(ours.nfe.min())}, max {int(ours.nfe.max())})")
    print(f"  torchdiffeq (batch-shared, flow_matching): {1e3 * t_ref / n:8.2f} ms/sample   drift calls {ref_calls}")
    print(f"  ratio genbench/torchdiffeq: time {t_ours / t_ref:.2f}, drift calls {ours.forward_calls / ref_calls:.2f}")
    print(f"  |bpd genbench - bpd torchdiffeq|: mean {gap.mean():.2e}, max {gap.max():.2e} bits/dim")


if __name__ == "__main__":
    main()
