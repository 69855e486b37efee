"""Score-based generative modeling through SDEs (Song et al. 2021): VE, VP and sub-VP SDEs.

Forward SDE dx = f(t) x dt + g(t) dw on t ∈ [0, 1] (all three are linear in x), with Gaussian
perturbation kernels p_0t(x(t) | x(0)) = N(m(t) x(0), s(t)² I):

* VE (eq. 9; SMLD): σ(t) = σ_min (σ_max/σ_min)^t, f = 0, g = σ(t) √(2 log(σ_max/σ_min));
  m = 1, s = σ(t). As in the paper's code (``sde_lib.VESDE.marginal_prob``) the kernel std is σ(t),
  not √(σ(t)² − σ_min²): the t = 0 data are taken as smoothed by N(0, σ_min²) (the Lyapunov
  equation ds²/dt = g² holds exactly). Prior N(0, σ_max² I).
* VP (eq. 11; DDPM): β(t) = β_min + t(β_max − β_min), f = −½β(t), g = √β(t);
  m = exp(−½∫_0^tβ), s² = 1 − exp(−∫_0^tβ) (eq. 29). Prior N(0, I).
* sub-VP (eq. 17): f = −½β(t), g = √(β(t)(1 − exp(−2∫_0^tβ))); m as VP, s = 1 − exp(−∫_0^tβ).
  Prior N(0, I).

Score network s_θ(x, t) = −ε_θ(x, t)/s(t) with ``self.net`` = ε_θ (an MLP for rows, SmallUNet for
images, t ∈ [0, 1] as input): the "noise-prediction" parameterisation of the paper's continuous VP
models, used here for all three SDEs.

Objective: denoising score matching (eq. 7) with λ(t) = s(t)²:
E_t λ(t) E ‖s_θ(x(t), t) − ∇log p_0t(x(t)|x(0))‖² = E_t E ‖z − ε_θ(m x_0 + s z, t)‖², t ~ U(ε_train, 1)
(ε_train = 1e-5), averaged over dimensions and the batch.

Samplers (``sample(n, rng, sampler=..., steps=N, denoise=True)``), on the grid t_k = 1 − k(1 − ε)/N,
k = 0..N (ε = ``sample_eps``: 1e-5 VE, 1e-3 VP/sub-VP, the paper's code defaults), Δt = (1 − ε)/N:

* ``"em"``: Euler–Maruyama on the reverse SDE (eq. 6): x ← x − [f x − g² s_θ]Δt + g √Δt z. NFE = N.
* ``"pc"``: predictor–corrector (Algorithms 1–3 / App. G): at each t_k, ``n_corrector`` Langevin
  corrector steps with signal-to-noise ratio r (step ε_L = 2α(r‖z‖/‖s_θ‖)², α = 1 for VE and
  1 − β(t)Δt for VP/sub-VP, x ← x + ε_L s_θ + √(2ε_L) z), then the Euler–Maruyama predictor.
  NFE = N(1 + n_corrector). The paper's code takes ‖z‖ and ‖s_θ‖ as batch averages; here they must
  not depend on the batch. ``corrector_norm="example"`` uses per-example norms; it is biased in few
  dimensions: the step grows with ‖z‖², so the injected noise has covariance (D + 2)/D · 2ε_L (twice
  the Langevin value in 2-D), and ‖s_θ‖ → 0 near a mode gives huge steps. With the *exact* score of a
  2-D Gaussian (Σ₂₂ = 1.5) and r = 0.16, 150 PC steps gave Σ̂₂₂ = 11.5 (VE) / 28.8 (VP). The default
  ``"expected"`` replaces the norms by their expectations under the DSM target, ‖z‖ → √D and
  ‖s‖ → √D/s(t), so ε_L = 2α r² s(t)² (the annealed-Langevin step of Song & Ermon 2019, sec. 4.3),
  which gave Σ̂₂₂ = 1.45–1.53 there. In high dimensions the ‖z‖² bias vanishes ((D + 2)/D → 1) and
  ``"example"`` is the paper's rule without the batch average.
* ``"ode"``: the probability-flow ODE (eq. 13) dx/dt = f x − ½g² s_θ integrated from 1 to ε with
  Heun's method (``harness.core.ode.fixed_step``, 2 evaluations every step). NFE = 2N.
* ``denoise=True`` adds one Tweedie step at t = ε: x ← (x + s(ε)² s_θ(x, ε))/m(ε) (the paper's
  "final denoising step", sec. 4.3 / App. G). NFE + 1.

Randomness in sampling comes only from the per-example :class:`harness.core.rng.BatchRNG`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from baselines.ddpm import StepNoise, _as_tuple, check_rng
from baselines.nets import MLP, SmallUNet
from harness.core.entries import ModelEntry
from harness.core.ode import fixed_step
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["REGISTRY", "SDE", "ScoreSDE", "ScoreSDEConfig", "score_sde_subvp", "score_sde_ve", "score_sde_vp"]

_LOG_2PI = math.log(2.0 * math.pi)
_SDES = ("ve", "vp", "subvp")
_SAMPLERS = ("em", "pc", "ode")
_CORRECTOR_NORMS = ("expected", "example")


class SDE:
    """The three linear SDEs' coefficients and kernels, in float64; t is a tensor of any shape."""

    def __init__(self, kind: str, *, sigma_min: float = 0.01, sigma_max: float = 50.0, beta_min: float = 0.1,
                 beta_max: float = 20.0) -> None:
        if kind not in _SDES:
            raise ValueError(f"sde must be one of {_SDES}, got {kind!r}")
        self.kind = kind
        self.sigma_min, self.sigma_max, self.beta_min, self.beta_max = sigma_min, sigma_max, beta_min, beta_max

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: Tensor) -> Tensor:
        """∫_0^t β(u) du."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def sigma(self, t: Tensor) -> Tensor:
        """VE noise level σ(t) = σ_min (σ_max/σ_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(f(t), g(t)): drift f(t)·x and diffusion g(t) of the forward SDE (eqs. 9, 11, 17)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.kind == "ve":
            g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
            return torch.zeros_like(t), g
        beta = self.beta(t)
        if self.kind == "vp":
            return -0.5 * beta, beta.sqrt()
        return -0.5 * beta, (beta * -torch.expm1(-2 * self.beta_integral(t))).sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t), s(t)): p_0t(x(t)|x(0)) = N(m x(0), s² I) (Song et al. 2021, eq. 29 and App. B)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.kind == "ve":
            return torch.ones_like(t), self.sigma(t)
        b = self.beta_integral(t)
        mean = torch.exp(-0.5 * b)
        return mean, (-torch.expm1(-b)).sqrt() if self.kind == "vp" else -torch.expm1(-b)

    @property
    def prior_std(self) -> float:
        return self.sigma_max if self.kind == "ve" else 1.0


@dataclass(frozen=True)
class ScoreSDEConfig:
    """Hyper-parameters of :class:`ScoreSDE` (saved in checkpoints; rebuild with the registered factory).

    Attributes:
        sde: ``"ve"``, ``"vp"`` or ``"subvp"``.
        shape, value_range: per-example shape ((D,) -> MLP, (C, H, W) -> SmallUNet) and model-space range.
        sigma_min, sigma_max: VE noise range (Song et al. technique 1: σ_max ≈ the largest pairwise
            data distance; 10 covers the 2-D toys, ~50 CIFAR-10).
        beta_min, beta_max: VP / sub-VP β(t) ends (paper: 0.1, 20).
        train_eps: smallest training time (1e-5).
        sample_eps: last sampling time; None -> 1e-5 (VE) or 1e-3 (VP, sub-VP).
        sample_steps: N for the ``em`` and ``pc`` samplers; ode_steps: N for the Heun ``ode`` sampler.
        snr, n_corrector: Langevin corrector's signal-to-noise ratio r and steps per time (PC).
        corrector_norm: ``"expected"`` (default) or ``"example"`` (the paper's rule per example), module docstring.
        hidden, depth, base, time_dim: network sizes (MLP / SmallUNet).
        lr, grad_clip, ema_decay, batch_size, steps, seed: as in :class:`baselines.ddpm.DDPMConfig`.
    """

    sde: str = "vp"
    shape: tuple[int, ...] = (2,)
    value_range: tuple[float, float] = (-1.0, 1.0)
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    train_eps: float = 1e-5
    sample_eps: float | None = None
    sample_steps: int = 500
    ode_steps: int = 100
    snr: float = 0.16
    n_corrector: int = 1
    corrector_norm: str = "expected"
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
        if self.sde not in _SDES:
            raise ValueError(f"sde must be one of {_SDES}, got {self.sde!r}")
        if len(self.shape) not in (1, 3) or any(s < 1 for s in self.shape):
            raise ValueError(f"shape must be (D,) or (C, H, W) with positive sizes, got {self.shape}")
        if len(self.shape) == 3 and (self.shape[1] % 4 or self.shape[2] % 4):
            raise ValueError(f"image shape {self.shape}: H and W must be divisible by 4 for the SmallUNet")
        for name in ("sample_steps", "ode_steps", "hidden", "depth", "base", "time_dim", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.n_corrector, bool) or not isinstance(self.n_corrector, int) or self.n_corrector < 0:
            raise ValueError(f"n_corrector must be an int >= 0, got {self.n_corrector!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")
        if not 0 < self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={self.beta_min}, beta_max={self.beta_max}")
        if not 0 < self.train_eps < 1:
            raise ValueError(f"train_eps must be in (0, 1), got {self.train_eps}")
        if self.sample_eps is not None and not 0 < self.sample_eps < 1:
            raise ValueError(f"sample_eps must be in (0, 1) or None, got {self.sample_eps}")
        if self.corrector_norm not in _CORRECTOR_NORMS:
            raise ValueError(f"corrector_norm must be one of {_CORRECTOR_NORMS}, got {self.corrector_norm!r}")
        if not self.snr > 0:
            raise ValueError(f"snr must be > 0, got {self.snr}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")


class ScoreSDE(nn.Module):
    """A score SDE model (Song et al. 2021). Capabilities: Sampler, ProbabilityFlow.

    ``ScoreSDE(**kwargs)`` takes the fields of :class:`ScoreSDEConfig`. ``self.net`` is
    ε_θ(x [B, *shape], t [B]) and s_θ = −ε_θ/s(t) (module docstring).
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.config = cfg = ScoreSDEConfig(**kwargs)
        self.sde = SDE(cfg.sde, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, beta_min=cfg.beta_min,
                       beta_max=cfg.beta_max)
        self.data_spec = DataSpec(cfg.shape, "continuous", value_range=cfg.value_range)
        self.ema_decay = cfg.ema_decay
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.sample_eps = cfg.sample_eps if cfg.sample_eps is not None else (1e-5 if cfg.sde == "ve" else 1e-3)
        self.t_span = (1e-5, 1.0)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # the model's device, whatever net is
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if len(cfg.shape) == 1:
                self.net: nn.Module = MLP(cfg.shape[0], cfg.shape[0], hidden=cfg.hidden, depth=cfg.depth,
                                          time_dim=cfg.time_dim)
            else:
                self.net = SmallUNet(cfg.shape[0], cfg.shape[0], base=cfg.base, time_dim=cfg.time_dim)

    @staticmethod
    def _bc(v: Tensor, x: Tensor) -> Tensor:
        v = torch.as_tensor(v, dtype=torch.float64, device=x.device)
        return v.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) if v.dim() else v.to(x.dtype)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """s_θ(x, t) = −ε_θ(x, t)/s(t) ≈ ∇_x log p_t(x); x [B, *shape], t [B] -> [B, *shape] (one NFE)."""
        _, std = self.sde.marginal(t)
        return -self.net(x, t.to(x.dtype)) / self._bc(std, x)

    # ----------------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.net.parameters(), lr=self.config.lr)]

    def loss(self, x0: Tensor, *, generator: torch.Generator) -> Tensor:
        """DSM loss (Song et al. 2021, eq. 7) with λ(t) = s(t)²: mean ‖z − ε_θ(m x_0 + s z, t)‖², t ~ U(ε, 1)."""
        eps = self.config.train_eps
        t = eps + (1 - eps) * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        z = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        t = t.to(x0.device)
        mean, std = self.sde.marginal(t)
        xt = self._bc(mean, x0) * x0 + self._bc(std, x0) * z
        return (self.net(xt, t.to(x0.dtype)) - z).pow(2).mean()

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
    def nfe(self, sampler: str, steps: int | None = None, *, denoise: bool = True) -> int:
        """Network calls of one ``sample`` call: em N, pc N(1 + n_corrector), ode 2N; +1 with denoise."""
        n = self._steps(sampler, steps)
        per = {"em": 1, "pc": 1 + self.config.n_corrector, "ode": 2}[sampler]
        return n * per + int(denoise)

    def _steps(self, sampler: str, steps: int | None) -> int:
        if sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}")
        n = steps if steps is not None else (self.config.ode_steps if sampler == "ode" else self.config.sample_steps)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"steps must be a positive int, got {n!r}")
        return n

    def _langevin_ratio(self, grad: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """‖z‖/‖s_θ‖ per example [B] for the corrector step ε_L = 2α(r · ratio)² (``corrector_norm``)."""
        _, std = self.sde.marginal(t)
        if self.config.corrector_norm == "expected":
            return std
        z_norm, s_norm = z.flatten(1).norm(dim=-1).double(), grad.flatten(1).norm(dim=-1).double()
        return z_norm / s_norm.clamp_min(1e-30)

    def _reverse_drift(self, x: Tensor, t: Tensor, *, ode: bool) -> tuple[Tensor, Tensor]:
        """(dx/dt of the reverse-time SDE/ODE written forward in t: f x − c g² s_θ, g(t)); c = 1 SDE, ½ ODE."""
        f, g = self.sde.coefficients(t)
        drift = self._bc(f, x) * x - (0.5 if ode else 1.0) * self._bc(g**2, x) * self.score(x, t)
        return drift, g

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, sampler: str = "pc", steps: int | None = None,
               denoise: bool = True) -> Tensor:
        """[n, *shape] samples: ``sampler`` ``"em"``, ``"pc"`` or ``"ode"`` with N = ``steps`` (module docstring).

        x(1) ~ prior from ``rng.normal``; predictor noise and corrector noise from
        :class:`baselines.ddpm.StepNoise` over ``rng.child(sampler)``. NFE: :meth:`nfe`.
        """
        check_rng(n, rng)
        num = self._steps(sampler, steps)
        device = self._anchor.device
        shape = self.data_spec.shape
        x = rng.normal(shape).to(device) * self.sde.prior_std
        eps = self.sample_eps
        if sampler == "ode":  # Heun from t = 1 to ε: h = −(1 − ε)/N, the grid t_k = 1 − k(1 − ε)/N
            x = fixed_step(self.ode_drift, x, 1.0, eps, method="heun", steps=num)
            return self._denoise(x, eps) if denoise else x
        dt = (1.0 - eps) / num
        per_step = 1 + (self.config.n_corrector if sampler == "pc" else 0)
        noise = StepNoise(rng.child(sampler), num * per_step, shape)
        for k in range(num):
            t = torch.full((n,), 1.0 - k * dt, dtype=torch.float64, device=device)
            if sampler == "pc":
                # score_sde's α_i = 1 − β_i of the discretised VP chain; exp(−β dt) equals it to first order
                # and stays positive when steps are few (1 − β dt < 0 once β dt > 1, i.e. NaN steps).
                alpha = 1.0 if self.sde.kind == "ve" else torch.exp(-self.sde.beta(t) * dt)
                for j in range(self.config.n_corrector):
                    grad = self.score(x, t)
                    z = noise(k * per_step + 1 + j, device)
                    ratio = self._langevin_ratio(grad, z, t)
                    step = self._bc(2 * alpha * (self.config.snr * ratio.double()) ** 2, x)
                    x = x + step * grad + torch.sqrt(2 * step) * z
            drift, g = self._reverse_drift(x, t, ode=False)
            x = x - drift * dt + self._bc(g * math.sqrt(dt), x) * noise(k * per_step, device)
        return self._denoise(x, eps) if denoise else x

    def _denoise(self, x: Tensor, eps: float) -> Tensor:
        """The final denoising (Tweedie) step at t = ε, x [B, *shape]: (x + s(ε)² s_θ(x, ε)) / m(ε).

        Song et al. 2021, sec. 4.3 / App. G; one NFE.
        """
        t = torch.full((x.shape[0],), eps, dtype=torch.float64, device=x.device)
        mean, std = self.sde.marginal(t)
        return (x + self._bc(std**2, x) * self.score(x, t)) / self._bc(mean, x)

    # -------------------------------------------------------------------------------- probability flow
    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """PF-ODE drift f(t) x − ½ g(t)² s_θ(x, t) (Song et al. 2021, eq. 13); x [B, *shape], t [B] -> [B, *shape]."""
        return self._reverse_drift(x, t.to(torch.float64), ode=True)[0]

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, σ² I) [B] nats, σ = σ_max (VE) or 1 (VP, sub-VP)."""
        flat = z.flatten(1).to(torch.float64)
        var = self.sde.prior_std**2
        return -0.5 * (flat.pow(2).sum(-1) / var + flat.shape[-1] * (_LOG_2PI + math.log(var)))


def _factory(kind: str):
    def build(**kwargs: object) -> ScoreSDE:
        given = kwargs.pop("sde", kind)
        if given != kind:
            raise ValueError(f"score-sde-{kind} is the {kind!r} SDE; got sde={given!r} (use score-sde-{given})")
        return ScoreSDE(sde=kind, **kwargs)

    build.__name__ = build.__qualname__ = f"score_sde_{kind}"
    build.__doc__ = f"A :class:`ScoreSDE` with the {kind!r} SDE; keyword arguments are :class:`ScoreSDEConfig` fields."
    return build


score_sde_ve = _factory("ve")
score_sde_vp = _factory("vp")
score_sde_subvp = _factory("subvp")

_TINY = {"hidden": 32, "depth": 2, "time_dim": 16, "steps": 20, "batch_size": 64, "sample_steps": 10, "ode_steps": 5}

REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("score-sde-ve", "score-sde", "baselines.score_sde:score_sde_ve",
               "Score SDE, VE (Song et al. 2021, eq. 9): DSM, EM / PC (Langevin) / PF-ODE samplers", tiny_config=_TINY),
    ModelEntry("score-sde-vp", "score-sde", "baselines.score_sde:score_sde_vp",
               "Score SDE, VP (Song et al. 2021, eq. 11): DSM, EM / PC (Langevin) / PF-ODE samplers", tiny_config=_TINY),
    ModelEntry("score-sde-subvp", "score-sde", "baselines.score_sde:score_sde_subvp",
               "Score SDE, sub-VP (Song et al. 2021, eq. 17): DSM, EM / PC (Langevin) / PF-ODE samplers",
               tiny_config=_TINY),
)
