"""PF-ODE log-likelihood against a model whose density is known in closed form.

The model: data x0 ~ N(μ, Σ), Σ = Q diag(s²) Qᵀ with a random rotation Q (so the drift's
Jacobian is not diagonal and Rademacher Hutchinson has non-zero variance), pushed through the
VP-SDE with β(t) = β_min + t(β_max − β_min), β_min = 0.1, β_max = 20 (Song et al. 2021, eq. 11).
The marginal at t is N(α(t)μ, α(t)²Σ + (1 − α(t)²)I), α(t) = exp(−½∫₀ᵗβ), and the drift is the
exact PF-ODE f(x, t) = −½β(t)x − ½β(t)∇log p_t(x) (Song et al. 2021, eq. 13) with t_span = (0, 1).

Truth. The PF-ODE is linear, so its flow is the affine map between the marginals (in the
eigenbasis of Σ: w = α(1)Qᵀμ + sqrt(v₁/v₀)·Qᵀ(x − μ)). The model's log-density with the prior
N(0, I) is therefore exactly ``log N(w; 0, I) + ½ Σ log(v₁/v₀)`` (``model_log_prob``). It differs
from the data density log N(x; μ, Σ) because the true marginal at T = 1 is not N(0, I): its
variance is off by α(1)² = e^{−10.05} ≈ 4.3e-5 but its mean by α(1)μ with α(1) = e^{−5.025} ≈
6.6e-3, which for |μ| ~ 1 is ~1e-2 bits/dim at D = 4, not negligible. So accuracy is checked
against ``model_log_prob``, and against the data density itself only with μ = 0, where the
mismatch is O(α(1)²).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torchode
from torch import Tensor

from harness.core.rng import BatchRNG
from harness.core.stats import mean_and_stderr
from metrics.bpd import nats_to_bpd
from metrics.likelihood_ode import ODELikelihoodConfig, ode_bpd, ode_log_likelihood


class GaussianVP:
    """Exact VP-SDE probability flow for Gaussian data N(mu, q diag(s**2) q^T); any example shape."""

    def __init__(self, mu: Tensor, s: Tensor, q: Tensor, t_span: tuple[float, float] = (0.0, 1.0)) -> None:
        self.mu, self.s, self.q, self.t_span = mu, s, q, t_span
        self.beta_min, self.beta_max = 0.1, 20.0

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * (self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        mu, s, q = (v.to(x.dtype) for v in (self.mu, self.s, self.q))
        beta, a = (self.beta_min + t * (self.beta_max - self.beta_min))[:, None], self.alpha(t)[:, None]
        xf = x.reshape(b, -1)
        score = -(((xf - a * mu) @ q) / (a**2 * s**2 + 1 - a**2)) @ q.T
        return (-0.5 * beta * xf - 0.5 * beta * score).reshape(x.shape)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        zf = z.reshape(z.shape[0], -1).to(torch.float64)
        return -0.5 * (zf**2).sum(1) - 0.5 * zf.shape[1] * math.log(2 * math.pi)

    def model_log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of the flow with the N(0, I) prior, [B] nats."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        a1 = self.alpha(torch.tensor(1.0, dtype=torch.float64))
        v1 = a1**2 * self.s**2 + 1 - a1**2
        w = a1 * (self.mu @ self.q) + torch.sqrt(v1 / self.s**2) * ((xf - self.mu) @ self.q)
        return -0.5 * (w**2).sum(1) - 0.5 * xf.shape[1] * math.log(2 * math.pi) + 0.5 * torch.log(v1 / self.s**2).sum()

    def data_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; mu, Sigma), [B] nats."""
        u = (x.reshape(x.shape[0], -1).to(torch.float64) - self.mu) @ self.q
        return (-0.5 * (u / self.s) ** 2 - torch.log(self.s) - 0.5 * math.log(2 * math.pi)).sum(1)

    def sample(self, n: int, shape: tuple[int, ...], seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, self.mu.numel(), generator=g, dtype=torch.float64)
        return (self.mu + (eps * self.s) @ self.q.T).to(torch.float32).reshape(n, *shape)


class ReversedTime(GaussianVP):
    """The same flow in flow-matching orientation: data at t = 1, prior at t = 0 (drift −f(x, 1 − t))."""

    def __init__(self, base: GaussianVP) -> None:
        super().__init__(base.mu, base.s, base.q, t_span=(1.0, 0.0))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -super().ode_drift(x, 1 - t)


class NaNAfterHalf(GaussianVP):
    """Returns NaN for examples with x[:, 0] > 0 once t > 0.5."""

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        f = super().ode_drift(x, t)
        bad = (x.reshape(x.shape[0], -1)[:, 0] > 0) & (t > 0.5)
        return torch.where(bad.reshape(-1, *[1] * (x.dim() - 1)), torch.full_like(f, float("nan")), f)


def make_model(d: int, *, seed: int = 0, mu_scale: float = 1.0) -> GaussianVP:
    g = torch.Generator().manual_seed(seed)
    mu = mu_scale * (torch.rand(d, generator=g, dtype=torch.float64) * 2 - 1)
    s = 0.3 + 1.2 * torch.rand(d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return GaussianVP(mu, s, q)


pytestmark = pytest.mark.usefixtures("one_thread")


EXACT = ODELikelihoodConfig(divergence="exact")
HUTCH = ODELikelihoodConfig(divergence="hutchinson", probe="rademacher")


@pytest.mark.parametrize("shape", [(4,), (1, 4, 4)], ids=["D4", "D16"])
def test_exact_trace_dopri5_matches_analytic_density(shape: tuple[int, ...]) -> None:
    d = math.prod(shape)
    model = make_model(d)
    x = model.sample(32, shape, seed=1)
    bpd, res = ode_bpd(model, x, config=EXACT, rng=BatchRNG(0, range(32)))
    truth = nats_to_bpd(model.model_log_prob(x), d)
    assert res.log_prob.dtype == torch.float64 and res.log_prob.shape == (32,) and res.z.shape == x.shape
    assert (bpd - truth).abs().max() < 1e-4  # measured ~1e-5 at rtol = atol = 1e-5
    assert torch.allclose(res.log_prob, res.prior_log_prob + res.delta_log_prob)
    bpd7, _ = ode_bpd(model, x, config=EXACT, rng=BatchRNG(0, range(32)), offset_bits=7.0)
    assert torch.allclose(bpd7, bpd + 7.0)
    # with mu = 0 the prior N(0, I) matches the true marginal at T = 1 up to alpha(1)^2 ~ 4e-5
    centred = make_model(d, mu_scale=0.0)
    x = centred.sample(32, shape, seed=2)
    bpd, _ = ode_bpd(centred, x, config=EXACT, rng=BatchRNG(0, range(32)))
    assert (bpd - nats_to_bpd(centred.data_log_prob(x), d)).abs().max() < 1e-3


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe: str) -> None:
    n, d = 200, 16
    model = make_model(d, seed=3)
    x = model.sample(n, (d,), seed=4)
    truth = model.model_log_prob(x)
    cfg = ODELikelihoodConfig(probe=probe)  # type: ignore[arg-type]
    res = ode_log_likelihood(model, x, config=cfg, rng=BatchRNG(5, range(n)))
    mean, se = mean_and_stderr(res.log_prob - truth)
    assert se > 1e-3, "probe variance vanished: the test would be vacuous"
    assert abs(mean) < 3 * se
    assert res.vjp_calls == res.forward_calls
    if probe == "rademacher":  # four probes: still unbiased, standard error about halved
        res4 = ode_log_likelihood(model, x, config=ODELikelihoodConfig(num_probes=4), rng=BatchRNG(5, range(n)))
        mean4, se4 = mean_and_stderr(res4.log_prob - truth)
        assert abs(mean4) < 3 * se4 and se4 < 0.7 * se
        assert res4.vjp_calls == 4 * res4.forward_calls and res4.protocol()["num_probes"] == 4


@pytest.fixture(scope="module")
def batch_of_8() -> tuple[GaussianVP, Tensor, object]:
    model = make_model(16, seed=6)
    x = model.sample(8, (1, 4, 4), seed=7)
    return model, x, ode_log_likelihood(model, x, config=HUTCH, rng=BatchRNG(11, range(8)))


def test_batch_independence_and_nfe_bookkeeping(batch_of_8: tuple) -> None:
    model, x, res = batch_of_8
    stats = res.solver_stats
    assert torch.equal(res.nfe, 2 + 6 * stats["n_steps"])
    assert res.forward_calls == int(res.nfe.max()) and bool((stats["n_f_evals"] == res.forward_calls).all())
    for i in (0, 5):
        solo = ode_log_likelihood(model, x[i : i + 1], config=HUTCH, rng=BatchRNG(11, [i]))
        assert abs(float(solo.log_prob[0] / res.log_prob[i]) - 1) < 1e-6
        assert int(solo.nfe[0]) == int(res.nfe[i]) == solo.forward_calls == int(solo.solver_stats["n_f_evals"][0])


def test_same_seed_reproduces_and_new_seed_changes_hutchinson(batch_of_8: tuple) -> None:
    model, x, res = batch_of_8
    again = ode_log_likelihood(model, x, config=HUTCH, rng=BatchRNG(11, range(8)))
    assert torch.equal(again.log_prob, res.log_prob) and torch.equal(again.nfe, res.nfe)
    other = ode_log_likelihood(model, x, config=HUTCH, rng=BatchRNG(12, range(8)))
    assert not torch.allclose(other.log_prob, res.log_prob, rtol=0, atol=1e-4)
    assert res.protocol()["probe_stream"] == "sample/hutchinson"


@pytest.mark.parametrize("reverse", [False, True], ids=["t0<t1", "t0>t1"])
@pytest.mark.parametrize(("solver", "per_step"), [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_fixed_step_nfe_is_exact(solver: str, per_step: int, reverse: bool) -> None:
    base = make_model(4)
    model = ReversedTime(base) if reverse else base
    steps = 7  # torchode on raw times [0, 1] would take 8 steps here (rounding); normalized time fixes it
    cfg = ODELikelihoodConfig(solver=solver, steps=steps)  # type: ignore[arg-type]
    res = ode_log_likelihood(model, base.sample(3, (4,), seed=8), config=cfg, rng=BatchRNG(0, range(3)))
    assert res.nfe.tolist() == [per_step * steps] * 3 and res.forward_calls == per_step * steps
    assert res.solver_stats["n_steps"].tolist() == [steps] * 3
    assert res.protocol()["steps"] == steps and "rtol" not in res.protocol()


def test_fixed_step_accuracy_and_time_direction() -> None:
    model = make_model(4)
    x = model.sample(16, (4,), seed=9)
    truth, rng = model.model_log_prob(x), BatchRNG(0, range(16))

    def err(m: GaussianVP, **kw: object) -> float:
        cfg = ODELikelihoodConfig(divergence="exact", **kw)  # type: ignore[arg-type]
        return float((nats_to_bpd(ode_log_likelihood(m, x, config=cfg, rng=rng).log_prob, 4) - nats_to_bpd(truth, 4)).abs().max())

    assert err(model, solver="rk4", steps=20) < 1e-4
    assert err(model, solver="heun", steps=40) < 1e-2
    e50, e100 = err(model, solver="euler", steps=50), err(model, solver="euler", steps=100)
    assert 1.6 < e50 / e100 < 2.4  # first order
    assert err(ReversedTime(model)) < 1e-4  # dopri5 with data at t = 1, prior at t = 0


def test_protocol_record() -> None:
    model = make_model(4)
    res = ode_log_likelihood(model, model.sample(2, (4,), seed=0), config=EXACT, rng=BatchRNG(0, range(2)))
    p = res.protocol()
    assert p["estimator"] == "exact" and p["num_probes"] is None and p["probe_stream"] is None
    assert p["library"] == f"torchode {torchode.__version__}" and p["solver"] == "dopri5" and p["rtol"] == 1e-5 and p["atol"] == 1e-5
    assert p["t_span"] == [0.0, 1.0] and res.vjp_calls == 4 * res.forward_calls
    assert ODELikelihoodConfig(probe="gaussian").estimator == "hutchinson-gaussian"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("divergence", "trace", "divergence must be one of ('exact', 'hutchinson'), got 'trace'"),
    ("probe", "uniform", "probe must be one of ('rademacher', 'gaussian'), got 'uniform'"),
    ("solver", "rk45", "solver must be one of ('dopri5', 'euler', 'heun', 'rk4'), got 'rk45'"),
    ("num_probes", 0, "num_probes must be a positive int, got 0"),
    ("steps", 2.5, "steps must be a positive int, got 2.5"),
    ("rtol", 0.0, "rtol must be a finite float > 0, got 0.0"),
    ("atol", float("nan"), "atol must be a finite float > 0, got nan"),
])
def test_bad_config_values_are_named(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        ODELikelihoodConfig(**{field: value})  # type: ignore[arg-type]


def test_nan_drift_and_bad_inputs_raise() -> None:
    base = make_model(4)
    model = NaNAfterHalf(base.mu, base.s, base.q)
    x = torch.tensor([[1.0, 0, 0, 0]] * 3 + [[-1.0, 0, 0, 0]] * 5)
    with pytest.raises(ValueError, match=r"NaN/Inf for 3 of 8 examples, at t in \[0\.5"):
        ode_log_likelihood(model, x, config=HUTCH, rng=BatchRNG(0, range(8)))
    with pytest.raises(ValueError, match=r"NaN/Inf for 3 of 8 examples"):
        ode_log_likelihood(model, x, config=ODELikelihoodConfig(solver="euler", steps=4), rng=BatchRNG(0, range(8)))
    with pytest.raises(ValueError, match="rng covers 2 examples but x has 8"):
        ode_log_likelihood(base, x, config=HUTCH, rng=BatchRNG(0, range(2)))
    with pytest.raises(ValueError, match="did not reach t=1.0 for 8 of 8"):
        ode_log_likelihood(base, x, config=ODELikelihoodConfig(max_steps=2), rng=BatchRNG(0, range(8)))
    with pytest.raises(TypeError, match="does not implement ProbabilityFlow"):
        ode_log_likelihood(object(), x, config=HUTCH, rng=BatchRNG(0, range(8)))  # type: ignore[arg-type]
