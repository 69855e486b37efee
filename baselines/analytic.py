"""Closed-form models: exact answers for tests, and sanity baselines for the likelihood metrics.

* :class:`AffineFlow` — a one-layer elementwise affine flow; log p(x) exact by change of variables.
* :class:`LinearGaussianVAE` — a linear-Gaussian latent variable model (probabilistic PCA,
  Tipping & Bishop 1999) with a free Gaussian encoder, so log p(x) is exact *and* the ELBO/IWAE
  bounds are non-trivial (their gap is the encoder's mismatch with the true posterior).
* :class:`UniformCategorical` — the uniform pmf over K levels: exactly log2(K) bits/dim.
* :class:`GaussianVPFlow` — the exact VP-SDE probability flow of a known Gaussian: PF-ODE bits/dim = truth.

Parameters are initialised from a ``torch.Generator`` seeded by the ``seed`` argument (never
the global RNG) and are float64 by default, so exact values are exact to ~1e-12. Inputs of any
float dtype are cast to the parameter dtype. Log-densities are in nats, [B], summed over dims.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.core.densities import gaussian_density
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["AffineFlow", "GaussianVPFlow", "LinearGaussianVAE", "UniformCategorical"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_rng(n: int, rng: BatchRNG) -> None:
    if len(rng) != n:
        raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")


def _std_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim, nats."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


class AffineFlow(nn.Module):
    """x = a ⊙ z + b with z ~ N(0, I_D), a = exp(log_scale) > 0 (a diagonal Gaussian N(b, diag(a²))).

    log p(x) = log N((x − b) / a; 0, I) − Σ_d log a_d (change of variables, as in Dinh et al. 2015, NICE).
    """

    nfe_per_sample = 0  # sampling evaluates no network (harness.core.nfe.DECLARED_ATTRIBUTE)

    def __init__(self, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.log_scale = nn.Parameter(0.5 * torch.randn(dim, generator=g, dtype=dtype))
        self.shift = nn.Parameter(torch.randn(dim, generator=g, dtype=dtype))
        self.data_spec = DataSpec((dim,), "continuous")

    def log_prob(self, x: Tensor) -> Tensor:
        """x [B, D] -> log p(x) [B], nats."""
        z = (x.to(self.shift.dtype) - self.shift) * torch.exp(-self.log_scale)
        return _std_normal_log_prob(z) - self.log_scale.sum()

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, D] samples; z for example i comes from ``rng`` (per-example seeded)."""
        _check_rng(n, rng)
        z = rng.normal(self.data_spec.shape, dtype=self.shift.dtype).to(self.shift.device)
        return torch.exp(self.log_scale) * z + self.shift


class LinearGaussianVAE(nn.Module):
    """p(z) = N(0, I_Z), p(x|z) = N(Wz + b, σ² I_D), q(z|x) = N(Ax + c, diag(exp(logvar))).

    The decoder ``net`` (x̂ = Wz + b) is the network that ``harness.core.nfe`` counts; ``encoder``
    holds A, c; ``enc_logvar`` [Z] is input-independent. The marginal is Gaussian,
    log p(x) = log N(x; b, WWᵀ + σ²I) (Tipping & Bishop 1999), so every bound can be
    checked against the exact value. q is a free parameter: it equals the true posterior only after
    :meth:`use_posterior_encoder` with WᵀW diagonal.
    """

    def __init__(self, data_dim: int, latent_dim: int, *, noise_std: float = 0.5, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # skip_init: no default (global-RNG) initialisation; every parameter is set from ``g`` below
        self.net = nn.utils.skip_init(nn.Linear, latent_dim, data_dim, dtype=dtype)
        self.encoder = nn.utils.skip_init(nn.Linear, data_dim, latent_dim, dtype=dtype)
        with torch.no_grad():
            self.net.weight.copy_(torch.randn(data_dim, latent_dim, generator=g, dtype=dtype))
            self.net.bias.copy_(0.5 * torch.randn(data_dim, generator=g, dtype=dtype))
            self.encoder.weight.copy_(torch.randn(latent_dim, data_dim, generator=g, dtype=dtype) / math.sqrt(data_dim))
            self.encoder.bias.zero_()
        self.log_noise_std = nn.Parameter(torch.tensor(math.log(noise_std), dtype=dtype))
        self.enc_logvar = nn.Parameter(torch.full((latent_dim,), math.log(0.5), dtype=dtype))
        self.data_spec = DataSpec((data_dim,), "continuous")

    @classmethod
    def with_informative_dims(cls, data_dim: int, latent_dim: int, informative: int, *, scale: float = 3.0,
                              noise_std: float = 0.5, seed: int = 0) -> LinearGaussianVAE:
        """A model whose first ``informative`` latent dims carry signal and the rest none.

        W has orthogonal columns of norm ``scale`` for dims < ``informative`` and zero columns
        after, and the encoder is set to the exact posterior (:meth:`use_posterior_encoder`). Then
        Var_x(E[z_u|x]) = scale² / (scale² + σ²) (0.973 by default) for informative units and
        exactly 0 for the others, whose posterior is the prior (KL = 0).
        """
        if not 0 <= informative <= min(latent_dim, data_dim):
            raise ValueError(f"informative must be in [0, min(latent_dim, data_dim)], got {informative}")
        model = cls(data_dim, latent_dim, noise_std=noise_std, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        q, _ = torch.linalg.qr(torch.randn(data_dim, max(informative, 1), generator=g, dtype=torch.float64))
        weight = torch.zeros(data_dim, latent_dim, dtype=torch.float64)
        weight[:, :informative] = scale * q[:, :informative]
        with torch.no_grad():
            model.net.weight.copy_(weight)
        model.use_posterior_encoder()
        return model

    @property
    def _decoder(self) -> nn.Linear:
        """The decoder's Linear (W, b), also while ``harness.core.nfe.counting`` wraps ``net``."""
        return getattr(self.net, "module", self.net)

    @property
    def noise_std(self) -> Tensor:
        """σ, the decoder's observation noise std (scalar)."""
        return torch.exp(self.log_noise_std)

    def marginal_covariance(self) -> Tensor:
        """WWᵀ + σ²I [D, D], the covariance of p(x)."""
        w = self._decoder.weight
        return w @ w.T + self.noise_std**2 * torch.eye(w.shape[0], dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def use_posterior_encoder(self) -> None:
        """Set q to the optimal mean-field Gaussian: the exact posterior mean, variances 1/diag(Λ).

        Posterior precision Λ = I + WᵀW/σ², mean Λ⁻¹Wᵀ(x − b)/σ² (Bishop 2006, sec. 12.2). The
        reverse-KL-optimal factorised q has the exact mean and variance 1/Λ_uu; it is the exact
        posterior iff WᵀW is diagonal.
        """
        w, var = self._decoder.weight, self.noise_std**2
        precision = torch.eye(w.shape[1], dtype=w.dtype, device=w.device) + w.T @ w / var
        gain = torch.linalg.solve(precision, w.T) / var
        self.encoder.weight.copy_(gain)
        self.encoder.bias.copy_(-gain @ self._decoder.bias)
        self.enc_logvar.copy_(-torch.log(torch.diagonal(precision)))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, WWᵀ + σ²I), x [B, D] -> [B] nats."""
        mvn = torch.distributions.MultivariateNormal(self._decoder.bias, covariance_matrix=self.marginal_covariance())
        return mvn.log_prob(x.to(self._decoder.bias.dtype))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): x [B, D] -> (mean [B, Z], logvar [B, Z])."""
        mean = self.encoder(x.to(self._decoder.bias.dtype))
        return mean, self.enc_logvar.expand_as(mean)

    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """IWAE bound L_k (Burda et al. 2016, eq. 8), x [B, D] -> [B] nats.

        k = 1: the ELBO in closed form (Kingma & Welling 2014, eq. 3), no Monte-Carlo noise:
        E_q[log p(x|z)] = −D/2 log 2πσ² − (‖x − Wμ − b‖² + Σ_{d,u} W_du² s_u²) / 2σ², minus
        KL(q‖p) = ½ Σ_u (μ_u² + s_u² − log s_u² − 1).
        k > 1: L_k = log (1/k) Σ_i w_i, w_i = p(x, z_i)/q(z_i|x), z_i = μ + s ⊙ ε_i reparameterised
        with ε_i ~ N(0, I): example i's ε[:, i] is ``rng.normal((k, Z), dtype)[i]`` when ``rng`` (a
        ``BatchRNG`` over the B examples) is given, so it is the same in any batch; otherwise one
        tensor from ``generator`` (the global torch RNG when None). Giving both raises ValueError.
        """
        if num_importance < 1:
            raise ValueError(f"num_importance must be >= 1, got {num_importance}")
        if rng is not None and generator is not None:
            raise ValueError("give elbo either rng or generator, not both")
        x = x.to(self._decoder.bias.dtype)
        mean, logvar = self.encode(x)
        var_x, dim = self.noise_std**2, x.shape[-1]
        if num_importance == 1:
            sq_err = (x - self.net(mean)).pow(2).sum(-1)
            trace = (self._decoder.weight.pow(2) * logvar.exp()[:, None, :]).sum((-1, -2))
            recon = -0.5 * dim * (_LOG_2PI + torch.log(var_x)) - (sq_err + trace) / (2 * var_x)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1)
            return recon - kl
        if rng is None:
            eps = torch.randn((num_importance, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
        else:
            if len(rng) != mean.shape[0]:
                raise ValueError(f"rng covers {len(rng)} examples but the batch has {mean.shape[0]}")
            eps = rng.normal((num_importance, mean.shape[-1]), dtype=mean.dtype).to(mean.device).transpose(0, 1)
        z = mean + torch.exp(0.5 * logvar) * eps
        log_px_z = -0.5 * ((x - self.net(z)).pow(2).sum(-1) / var_x + dim * (_LOG_2PI + torch.log(var_x)))
        log_q = -0.5 * (eps.pow(2).sum(-1) + logvar.sum(-1) + mean.shape[-1] * _LOG_2PI)
        log_w = log_px_z + _std_normal_log_prob(z) - log_q
        return torch.logsumexp(log_w, dim=0) - math.log(num_importance)

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, D] ancestral samples: z from ``rng.child('latent')``, noise from ``rng.child('noise')``."""
        _check_rng(n, rng)
        dtype, device = self._decoder.bias.dtype, self._decoder.bias.device
        z = rng.child("latent").normal((self._decoder.in_features,), dtype=dtype).to(device)
        eps = rng.child("noise").normal((self._decoder.out_features,), dtype=dtype).to(device)
        return self.net(z) + self.noise_std * eps


class UniformCategorical(nn.Module):
    """Uniform pmf over K levels per dim: log P(x) = −D log K (−inf outside {0..K−1}^D)."""

    nfe_per_sample = 0  # sampling evaluates no network (harness.core.nfe.DECLARED_ATTRIBUTE)

    def __init__(self, shape: tuple[int, ...], num_categories: int = 256) -> None:
        super().__init__()
        self.data_spec = DataSpec(shape, "discrete", num_categories=num_categories)
        self.num_categories = num_categories

    def log_prob(self, x: Tensor) -> Tensor:
        """Integer x [B, *shape] -> log P(x) [B] nats."""
        k, flat = self.num_categories, x.flatten(1)
        inside = ((flat >= 0) & (flat < k) & (flat == flat.round())).all(-1)
        value = torch.full(inside.shape, -self.data_spec.num_dims * math.log(k), dtype=torch.float64, device=x.device)
        return value.masked_fill(~inside, -math.inf)

    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """int64 [n, *shape], uniform levels."""
        _check_rng(n, rng)
        return rng.randint(self.num_categories, self.data_spec.shape)


class GaussianVPFlow(nn.Module):
    """Exact VP-SDE probability flow of the known Gaussian ``gaussian-<dim>`` (harness.datasets).

    Data x ~ N(μ, Σ) with Σ = Q diag(λ) Qᵀ, diffused by the VP SDE with β(t) = β_min + t(β_max − β_min)
    (Song et al. 2021, eq. 11). The marginal at t is N(α(t)μ, α(t)²Σ + (1 − α(t)²)I) with
    α(t) = exp(−½∫₀ᵗβ), so the score is exact and the PF-ODE drift (Song et al. 2021, eq. 13) is
    f(x, t) = −½β(t)(x + ∇log p_t(x)). ``prior_log_prob`` is the exact marginal at t = 1 (not
    N(0, I), whose mean is off by α(1)μ ≈ 6.6e-3·μ): the PF-ODE likelihood of this model *is* the
    data density, a closed-form truth for the likelihood estimators.
    """

    def __init__(self, dim: int, *, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        super().__init__()
        density = gaussian_density(dim)
        lam, q = torch.linalg.eigh(torch.tensor(density.cov, dtype=torch.float64))
        self.register_buffer("mu", torch.tensor(density.mean, dtype=torch.float64))
        self.register_buffer("lam", lam)
        self.register_buffer("q", q)
        self.beta_min, self.beta_max = beta_min, beta_max
        self.t_span = (0.0, 1.0)
        self.data_spec = DataSpec((dim,), "continuous")

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * (self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """[B, dim], t [B] -> dx/dt [B, dim]."""
        xf, t = x.to(torch.float64), t.to(torch.float64)
        beta, a = (self.beta_min + t * (self.beta_max - self.beta_min))[:, None], self._alpha(t)[:, None]
        score = -(((xf - a * self.mu) @ self.q) / (a**2 * self.lam + 1 - a**2)) @ self.q.T
        return (-0.5 * beta * (xf + score)).to(x.dtype)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; α(1)μ, α(1)²Σ + (1 − α(1)²)I), [B] nats."""
        a = self._alpha(torch.tensor(1.0, dtype=torch.float64))
        var = a**2 * self.lam + 1 - a**2
        u = (z.to(torch.float64) - a * self.mu) @ self.q
        return -0.5 * ((u**2 / var).sum(-1) + torch.log(var).sum() + u.shape[-1] * _LOG_2PI)
