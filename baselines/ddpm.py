"""DDPM: denoising diffusion probabilistic models (Ho et al. 2020) with ancestral and DDIM samplers.

Forward process (Ho et al. 2020, eqs. 2 and 4): q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I), hence
q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) with α_t = 1 - β_t, ᾱ_t = Π_{s≤t} α_s, t = 1..T.

* Schedule: linear β_t from ``beta_start`` to ``beta_end`` (Ho et al. sec. 4: 1e-4 → 0.02 at
  T = 1000). With ``scale_betas=True`` (default) both ends are multiplied by 1000/T, as in
  Nichol & Dhariwal's (2021) ``improved-diffusion`` ``get_named_beta_schedule("linear")``, so that a
  small T (100–200 for 2-D toys) still ends near N(0, I) (Σβ ≈ 10 for every T; unscaled, T = 200
  would leave ᾱ_T ≈ e^{-2}).
* Network: ε_θ(x_t, t), an :class:`baselines.nets.MLP` for [B, D] rows or a
  :class:`baselines.nets.SmallUNet` for [B, C, H, W] images, given the time as t/T ∈ (0, 1].
* Objective: L_simple = E_{t, x_0, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖² (Ho et al. eq. 14), t
  uniform on {1..T}; averaged over dimensions and the batch.
* Samplers: ancestral (Ho et al. eq. 11 / Algorithm 2, σ_t² = β_t; T network calls) and DDIM
  (Song, Meng & Ermon 2021, eq. 12; η = 0 deterministic, η > 0 stochastic; S ≤ T calls on the
  sub-sequence τ_k = round(kT/S)).
* Bound: :meth:`DDPM.elbo` is Ho et al. eq. 5, −(L_T + Σ_{t=2}^T L_{t-1} + L_0), with every term.
* Probability flow: the VP SDE of the discrete chain (Song et al. 2021, sec. 3.3 / App. B):
  β(s) = β_min + s(β_max - β_min), s ∈ [0, 1], β_min = T·β_1, β_max = T·β_T (score_sde's
  ``VPSDE(beta_min, beta_max, N)`` mapping), and the score −ε_θ(x, s)/σ(s).

Randomness: training draws come from the harness's ``generator``; sampling draws come from the
per-example :class:`harness.core.rng.BatchRNG`, so sample i does not depend on the batch it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from baselines.nets import field_net
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.validate import chain_bound_call

__all__ = ["DDPM", "DDPMConfig", "REGISTRY", "StepNoise", "ddim_step", "linear_betas"]

_LOG_2PI = math.log(2.0 * math.pi)
_SAMPLERS = ("ancestral", "ddim")


def check_rng(n: int, rng: BatchRNG) -> None:
    """``sample(n, rng)`` needs a BatchRNG over exactly n examples."""
    if len(rng) != n:
        raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")


class StepNoise:
    """Per-example standard normal noise for step k = 0..num-1 of a sampler, [B, *shape].

    Drawn in chunks of steps from ``rng.child(f"noise{c}")`` (one generator per example and chunk,
    not one per step: cheap for 2-D data with thousands of steps, bounded memory for images). The
    chunk length depends only on ``num`` and ``shape``, never on the batch, so example i gets the
    same noise in a batch of 1 or 1000.
    """

    def __init__(self, rng: BatchRNG, num: int, shape: tuple[int, ...], *, max_chunk_numel: int = 1 << 16) -> None:
        per_step = math.prod(shape)
        self.rng, self.num, self.shape = rng, num, tuple(shape)
        self.chunk = max(1, min(num, max_chunk_numel // per_step))
        self._cached: tuple[int, Tensor] | None = None

    def __call__(self, k: int, device: torch.device | None = None) -> Tensor:
        if not 0 <= k < self.num:
            raise IndexError(f"noise step {k} outside 0..{self.num - 1}")
        c = k // self.chunk
        if self._cached is None or self._cached[0] != c:
            length = min(self.chunk, self.num - c * self.chunk)
            self._cached = (c, self.rng.child(f"noise{c}").normal((length, *self.shape)))
        z = self._cached[1][:, k - c * self.chunk]
        return z if device is None else z.to(device)


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float, *, scale: bool) -> Tensor:
    """β_1..β_T [T] float64, linear (Ho et al. sec. 4); times 1000/T when ``scale`` (improved-diffusion)."""
    factor = 1000.0 / num_timesteps if scale else 1.0
    return torch.linspace(beta_start * factor, beta_end * factor, num_timesteps, dtype=torch.float64)


def ddim_step(x: Tensor, eps: Tensor, abar_t: Tensor | float, abar_prev: Tensor | float, *, eta: float = 0.0,
              noise: Tensor | None = None) -> Tensor:
    """One DDIM update x_t -> x_{t_prev} (Song, Meng & Ermon 2021, eq. 12).

    x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t,
    x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε + σ z,
    σ = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)   (eq. 16).
    With η = 1 and consecutive steps, σ² is the posterior variance β̃_t of Ho et al. eq. 7 and the
    mean is μ̃_t(x_t, x̂_0) (eq. 7). ``abar_prev = 1`` is the final step to t = 0 (x_prev = x̂_0).
    """
    abar_t = torch.as_tensor(abar_t, dtype=torch.float64)
    abar_prev = torch.as_tensor(abar_prev, dtype=torch.float64)
    x0 = (x - torch.sqrt(1 - abar_t).to(x.dtype) * eps) / torch.sqrt(abar_t).to(x.dtype)
    sigma2 = eta**2 * (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    out = torch.sqrt(abar_prev).to(x.dtype) * x0 + torch.sqrt((1 - abar_prev - sigma2).clamp_min(0)).to(x.dtype) * eps
    if eta > 0 and float(sigma2) > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + torch.sqrt(sigma2).to(x.dtype) * noise
    return out


def _as_tuple(value: object, name: str, *, kind: type) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(kind(v) for v in value)
    raise ValueError(f"{name} must be a tuple/list, got {value!r}")


@dataclass(frozen=True)
class DDPMConfig:
    """Hyper-parameters of :class:`DDPM` (saved in checkpoints; ``DDPM(**asdict(config))`` rebuilds it).

    Attributes:
        shape: per-example shape: (D,) rows use an MLP, (C, H, W) images (H, W divisible by 4) a SmallUNet.
        value_range: model-space range of the data (only meaningful for 8-bit images).
        num_timesteps: T.
        beta_start, beta_end: β_1, β_T of the linear schedule (at T = 1000 when ``scale_betas``).
        scale_betas: multiply both ends by 1000/T (improved-diffusion's rule; module docstring).
        hidden, depth: MLP width and number of hidden layers (rows).
        base: SmallUNet base channel count (images).
        time_dim: sinusoidal time-embedding width (> 0).
        lr: Adam learning rate.
        grad_clip: global gradient-norm clip (Ho et al. use 1.0); None disables it.
        ema_decay: EMA of the weights kept by the harness (Ho et al. 0.9999; 0.995 suits short toy runs); None: no EMA.
        batch_size, steps: the harness's defaults for ``genbench train``.
        seed: seed of the weight initialisation (a private generator; the global RNG is untouched).
    """

    shape: tuple[int, ...] = (2,)
    value_range: tuple[float, float] = (-1.0, 1.0)
    num_timesteps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.02
    scale_betas: bool = True
    hidden: int = 128
    depth: int = 3
    base: int = 32
    time_dim: int = 32
    lr: float = 1e-3
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.995
    batch_size: int = 256
    steps: int = 3000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _as_tuple(self.shape, "shape", kind=int))
        object.__setattr__(self, "value_range", _as_tuple(self.value_range, "value_range", kind=float))
        if len(self.shape) not in (1, 3) or any(s < 1 for s in self.shape):
            raise ValueError(f"shape must be (D,) or (C, H, W) with positive sizes, got {self.shape}")
        if len(self.shape) == 3 and (self.shape[1] % 4 or self.shape[2] % 4):
            raise ValueError(f"image shape {self.shape}: H and W must be divisible by 4 for the SmallUNet")
        for name in ("num_timesteps", "hidden", "depth", "base", "time_dim", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        b1, bt = linear_betas(self.num_timesteps, self.beta_start, self.beta_end, scale=self.scale_betas)[[0, -1]].tolist()
        if not (0 < b1 <= bt < 1):
            raise ValueError(f"need 0 < beta_1 <= beta_T < 1 after scaling, got beta_1={b1}, beta_T={bt} "
                             f"(beta_start={self.beta_start}, beta_end={self.beta_end}, T={self.num_timesteps}, "
                             f"scale_betas={self.scale_betas}); with scale_betas the paper ends need T > 20")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")


class DDPM(nn.Module):
    """Ho et al. (2020) DDPM with ε-prediction. Capabilities: Sampler, LowerBound, ProbabilityFlow.

    ``DDPM(**kwargs)`` takes the fields of :class:`DDPMConfig`. ``self.net`` is ε_θ(x [B, *shape],
    t [B] ∈ (0, 1]) -> [B, *shape]; every network evaluation goes through it (NFE counting).
    """

    supports_importance_sampling = False  # elbo() is the T-term bound with analytic KLs (no IWAE form)
    config_class: ClassVar[type[DDPMConfig]] = DDPMConfig
    num_classes: ClassVar[int] = 0  # a class-conditional subclass gives the network a label input

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.config = cfg = self.config_class(**kwargs)
        self.data_spec = DataSpec(cfg.shape, "continuous", value_range=cfg.value_range)
        self.ema_decay = cfg.ema_decay
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.net: nn.Module = field_net(cfg.shape, hidden=cfg.hidden, depth=cfg.depth, base=cfg.base,
                                        time_dim=cfg.time_dim, seed=cfg.seed, num_classes=self.num_classes)
        betas = linear_betas(cfg.num_timesteps, cfg.beta_start, cfg.beta_end, scale=cfg.scale_betas)
        alphas_bar = torch.cumprod(1 - betas, 0)
        # index i = 0..T: betas[i] = β_i (β_0 = 0 unused), alphas_bar[i] = ᾱ_i with ᾱ_0 = 1
        self.register_buffer("betas", torch.cat([torch.zeros(1, dtype=torch.float64), betas]), persistent=False)
        self.register_buffer("alphas_bar", torch.cat([torch.ones(1, dtype=torch.float64), alphas_bar]), persistent=False)
        self.T = cfg.num_timesteps
        self.t_span = (1e-5, 1.0)
        self.beta_min, self.beta_max = self.T * float(betas[0]), self.T * float(betas[-1])

    # ----------------------------------------------------------------- forward process and posterior
    def _bc(self, v: Tensor, x: Tensor) -> Tensor:
        """Per-example coefficients [B] (float64) -> broadcastable to x, in x's dtype."""
        return v.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x_i = √ᾱ_i x_0 + √(1-ᾱ_i) ε (Ho et al. eq. 4), integer steps i [B] in 1..T."""
        abar = self.alphas_bar[i]
        return self._bc(abar.sqrt(), x0) * x0 + self._bc((1 - abar).sqrt(), x0) * eps

    def q_posterior(self, x0: Tensor, xt: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """q(x_{i-1} | x_i, x_0) = N(μ̃, β̃ I) (Ho et al. eqs. 6–7); returns (μ̃ [B, ...], β̃ [B] float64)."""
        b, abar, abar_prev = self.betas[i], self.alphas_bar[i], self.alphas_bar[i - 1]
        c0 = abar_prev.sqrt() * b / (1 - abar)
        ct = (1 - b).sqrt() * (1 - abar_prev) / (1 - abar)
        return self._bc(c0, x0) * x0 + self._bc(ct, xt) * xt, (1 - abar_prev) / (1 - abar) * b

    def eps(self, x: Tensor, i: Tensor) -> Tensor:
        """ε_θ(x_i, i) for integer steps i [B] in 1..T (network input i/T)."""
        return self.eps_net(x, i.to(x.dtype) / self.T)

    def eps_net(self, x: Tensor, t: Tensor) -> Tensor:
        """The ε network at network time t [B] in (0, 1] (t = i/T; the PF-ODE passes continuous t)."""
        return self.net(x, t)

    def p_mean(self, xt: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """μ_θ(x_i, i) = (x_i - β_i/√(1-ᾱ_i) ε_θ) / √α_i (Ho et al. eq. 11)."""
        b, abar = self.betas[i], self.alphas_bar[i]
        return (xt - self._bc(b / (1 - abar).sqrt(), xt) * eps) / self._bc((1 - b).sqrt(), xt)

    # ----------------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.net.parameters(), lr=self.config.lr)]

    def loss(self, x0: Tensor, *, generator: torch.Generator) -> Tensor:
        """L_simple (Ho et al. eq. 14), mean over dims and batch; i ~ U{1..T}, ε ~ N(0, I) from ``generator``."""
        i = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        return (self.eps(self.q_sample(x0, i, eps), i) - eps).pow(2).mean()

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss = self.loss(batch, generator=generator)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        opt.step()
        return {"loss": float(loss.detach())}

    # ----------------------------------------------------------------------------------- sampling
    def ddim_timesteps(self, steps: int) -> list[int]:
        """τ_0 = 0 < τ_1 < ... < τ_S = T with τ_k = round(kT/S) (Song et al. 2021a, sec. 4.2, 'linear')."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"DDIM steps must be in 1..T={self.T}, got {steps}")
        return [round(k * self.T / steps) for k in range(steps + 1)]

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, sampler: str = "ancestral", steps: int | None = None,
               eta: float = 0.0) -> Tensor:
        """[n, *shape] samples in model space.

        Args:
            sampler: ``"ancestral"`` (Ho et al. Algorithm 2: x_{i-1} = μ_θ(x_i, i) + √β_i z, no
                noise at the last step; NFE = T; ``steps`` must be None or T) or ``"ddim"``
                (eq. 12 of Song et al. 2021a on τ, NFE = ``steps``, default T).
            eta: DDIM stochasticity η ≥ 0 (0: deterministic; 1: DDPM-like with σ² = β̃).

        x_T comes from ``rng.normal``; step noise from :class:`StepNoise` over ``rng.child(sampler)``.
        """
        check_rng(n, rng)
        if sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        device = self.alphas_bar.device
        shape = self.data_spec.shape
        x = rng.normal(shape).to(device)
        ones = torch.ones(n, dtype=torch.long, device=device)
        if sampler == "ancestral":
            if steps not in (None, self.T):
                raise ValueError(f"the ancestral sampler takes all T={self.T} steps; got steps={steps} (use sampler='ddim')")
            noise = StepNoise(rng.child("ancestral"), self.T, shape)
            for i in range(self.T, 0, -1):
                idx = ones * i
                x = self.p_mean(x, idx, self.eps(x, idx))
                if i > 1:
                    x = x + self.betas[i].sqrt().to(x.dtype) * noise(self.T - i, device)
            return x
        taus = self.ddim_timesteps(self.T if steps is None else steps)
        noise = StepNoise(rng.child("ddim"), len(taus) - 1, shape) if eta > 0 else None
        for k, (i, j) in enumerate(zip(reversed(taus[1:]), reversed(taus[:-1]))):
            eps = self.eps(x, ones * i)
            z = noise(k, device) if noise is not None else None
            x = ddim_step(x, eps, self.alphas_bar[i], self.alphas_bar[j], eta=eta, noise=z)
        return x

    # --------------------------------------------------------------------------------------- bound
    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """Ho et al. (2020) eq. 5 variational bound, −(L_T + Σ_{t=2}^T L_{t-1} + L_0), [B] nats.

        * L_T = KL(q(x_T|x_0) ‖ N(0, I)), closed form.
        * L_{t-1} = KL(q(x_{t-1}|x_t, x_0) ‖ p_θ(x_{t-1}|x_t)) with p_θ = N(μ_θ, β_t I) (the σ_t² = β_t of
          the ancestral sampler), a closed-form Gaussian KL at one x_t ~ q(x_t|x_0) per t (every t is
          evaluated: T network calls; the sum is an unbiased one-sample estimate of the bound).
        * L_0 = −log N(x_0; μ_θ(x_1, 1), β_1 I): a *continuous* Gaussian decoder with σ_1² = β_1, a
          density on real x (2-D data, or dequantized images as the harness passes them). The
          discretized decoder of Ho et al. eq. 13 for 8-bit images is NOT implemented.

        Noise: with ``rng`` (a ``BatchRNG`` over the B examples, as ``metrics.likelihood.bound_bpd``
        passes), the noise of step t = 1..T is the t-th ``rng.normal(shape)`` draw, per example, so
        example i's bound is the same in any batch; otherwise one [B, *shape] tensor per step from
        ``generator`` (the global torch RNG when None). Giving both raises ValueError.
        ``num_importance > 1`` raises NotImplementedError: a diffusion IWAE bound over the whole
        chain is not provided.
        """
        chain_bound_call("DDPM", x.shape[0], num_importance, rng, generator)
        x0 = x.to(self.alphas_bar.device)
        x0 = x0 if x0.is_floating_point() else x0.float()
        b = x0.shape[0]
        dims = tuple(range(1, x0.dim()))
        d = self.data_spec.num_dims
        abar_T = self.alphas_bar[self.T]
        prior_kl = 0.5 * (abar_T * x0.double().pow(2).sum(dims) + d * ((1 - abar_T) - 1 - torch.log(1 - abar_T)))
        total = prior_kl
        for i in range(1, self.T + 1):
            idx = torch.full((b,), i, dtype=torch.long, device=x0.device)
            noise = rng.normal(x0.shape[1:]) if rng is not None else torch.randn(x0.shape, generator=generator)
            eps = noise.to(x0.device, x0.dtype)
            xt = self.q_sample(x0, idx, eps)
            mean = self.p_mean(xt, idx, self.eps(xt, idx))
            var = self.betas[i]
            if i == 1:
                nll = 0.5 * ((x0 - mean).double().pow(2).sum(dims) / var + d * (_LOG_2PI + torch.log(var)))
                total = total + nll
            else:
                post_mean, post_var = self.q_posterior(x0, xt, idx)
                sq = (post_mean - mean).double().pow(2).sum(dims)
                total = total + 0.5 * (d * (torch.log(var / post_var[0]) + post_var[0] / var - 1) + sq / var)
        return -total

    # -------------------------------------------------------------------------------- probability flow
    def _vp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """β(t) and σ(t) = √(1 - exp(-∫_0^t β)) of the VP SDE mapping (Song et al. 2021, eq. 11 / App. B)."""
        t = t.to(torch.float64)
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        integral = self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)
        return beta, torch.sqrt(-torch.expm1(-integral))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """PF-ODE drift (Song et al. 2021, eq. 13) of the VP SDE: −½β(t)(x + ∇log p_t) with ∇log p_t = −ε_θ(x, t)/σ(t).

        x [B, *shape], t [B] in [1e-5, 1] (continuous; the network saw t = i/T in training) -> [B, *shape].
        """
        beta, sigma = self._vp(t)
        eps = self.eps_net(x, t.to(x.dtype))
        return -0.5 * self._bc(beta, x) * (x - eps / self._bc(sigma, x))

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) [B] nats (the VP prior at t = 1)."""
        flat = z.flatten(1).to(torch.float64)
        return -0.5 * (flat.pow(2).sum(-1) + flat.shape[-1] * _LOG_2PI)


REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("ddpm", "diffusion", "baselines.ddpm:DDPM",
               "DDPM (Ho et al. 2020): eps-prediction, L_simple, ancestral/DDIM samplers, eq. 5 bound, VP PF-ODE",
               tiny_config={"num_timesteps": 25, "hidden": 32, "depth": 2, "time_dim": 16, "steps": 20,
                            "batch_size": 64}),
)
