"""Score matching at one noise level: implicit (exact trace), sliced and denoising, sampled by Langevin dynamics.

One network s_θ(x) ≈ ∇_x log q_σ(x), with q_σ = p_data * N(0, σ² I) the Parzen-smoothed data
density, trained by one of three objectives that share that minimiser (Vincent 2011, sec. 4:
J_ISM,qσ ∼ J_ESM,qσ ∼ J_DSM,qσ, equal up to constants). With x̃ = x + σ ε, ε ~ N(0, I):

* ``ism``, implicit score matching (Hyvärinen 2005, Theorem 1) on samples of q_σ:
  E[tr ∇_x̃ s_θ(x̃) + ½ |s_θ(x̃)|²], the trace exact: D backward passes per step;
* ``ssm``, sliced score matching (Song, Garg, Shi & Ermon 2019, "Sliced Score Matching", sec. 3):
  E_v[vᵀ ∇_x̃ (vᵀ s_θ(x̃)) + ½ (vᵀ s_θ(x̃))²] with ``num_projections`` directions v ~ N(0, I) per
  example, one backward pass per direction; with ``variance_reduction`` the second term is
  ½ |s_θ|², its expectation over v (their variance-reduced SSM-VR);
* ``dsm``, denoising score matching (Vincent 2011, sec. 4, with the Gaussian kernel):
  E[½ |s_θ(x̃) + ε / σ|²]: no second derivatives.

Every objective is multiplied by σ² (the weighting λ(σ) = σ² of Song & Ermon 2019, sec. 4.2), which
leaves its minimiser unchanged; the network's output is divided by σ, s_θ(x) = net(x) / σ, so it
is of order one (Song & Ermon 2020, "Improved techniques for training score-based generative
models", technique 3). Activations are SiLU: the
implicit objective needs a nonzero Hessian (a ReLU network's Jacobian trace is piecewise constant).

Sampling: unadjusted Langevin dynamics on the learned score (Song & Ermon 2019, sec. 2.2),
x_{k+1} = x_k + (η/2) s_θ(x_k) + sqrt(η) z_k, for ``langevin_steps`` steps of size η from
x_0 ~ N(m, diag(v)), m and v the mean and variance of the first training batch (recorded in
buffers); then, with ``denoise``, one Tweedie step x + σ² s_θ(x) (Robbins 1956; Efron 2011), the
posterior mean of the clean point given the noisy one. The samples therefore approximate q_σ
(or its posterior means), not p_data itself. ``model.net`` is called once per Langevin step and once
for the denoising step, so the harness's NFE counts them.

Rows only (``dim`` values per example). Capabilities: Sampler, Score.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor, nn

from baselines.nets import MLP
from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["ScoreMatching", "ScoreMatchingConfig", "dsm_loss", "ism_loss", "ssm_loss", "REGISTRY"]

ScoreFn = Callable[[Tensor], Tensor]


def _jacobian_trace(score: Tensor, x: Tensor) -> Tensor:
    """tr ∂score/∂x [B] for score [B, D] computed from x [B, D] (D backward passes, graph kept)."""
    trace = torch.zeros(len(x), dtype=score.dtype, device=score.device)
    for d in range(x.shape[1]):
        (grad,) = torch.autograd.grad(score[:, d].sum(), x, create_graph=True)
        trace = trace + grad[:, d]
    return trace


def ism_loss(score_fn: ScoreFn, x: Tensor) -> Tensor:
    """Implicit score matching per example [B] at points x [B, D]: tr ∇_x s(x) + ½ |s(x)|²
    (Hyvärinen 2005, Theorem 1: its mean is the Fisher divergence ½ E|s − ∇log p|² minus a constant)."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    return _jacobian_trace(s, x) + 0.5 * s.square().sum(-1)


def ssm_loss(score_fn: ScoreFn, x: Tensor, v: Tensor, *, variance_reduction: bool = True) -> Tensor:
    """Sliced score matching per example [B] at points x [B, D] with directions v [B, M, D]
    (Song et al. 2019, sec. 3; ``variance_reduction``: SSM-VR): the mean over the M directions of
    vᵀ ∇_x (vᵀ s(x)) + ½ (vᵀ s(x))², or + ½ |s(x)|². For v ~ N(0, I) its expectation over v is the
    implicit objective (E[v vᵀ] = I)."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    terms = []
    for m in range(v.shape[1]):
        vm = v[:, m]
        proj = (vm * s).sum(-1)  # vᵀ s [B]
        (grad,) = torch.autograd.grad(proj.sum(), x, create_graph=True)
        second = 0.5 * s.square().sum(-1) if variance_reduction else 0.5 * proj.square()
        terms.append((vm * grad).sum(-1) + second)
    return torch.stack(terms).mean(0)


def dsm_loss(score_fn: ScoreFn, x: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """Denoising score matching per example [B]: ½ |s(x + σ ε) + ε / σ|² for clean x [B, D] and
    ε [B, D] (Vincent 2011, sec. 4: the target ∇_x̃ log N(x̃; x, σ² I) = −ε / σ)."""
    return 0.5 * (score_fn(x + sigma * eps) + eps / sigma).square().sum(-1)


@dataclass(frozen=True)
class ScoreMatchingConfig:
    """Hyper-parameters of :class:`ScoreMatching` (saved in checkpoints).

    Attributes:
        objective: ``"ism"`` (exact trace), ``"ssm"`` (sliced) or ``"dsm"`` (denoising).
        sigma: σ, the noise of the smoothed density q_σ all three target (data units).
        dim: D, values per example (rows).
        hidden, depth: the SiLU MLP (``baselines.nets.MLP``).
        num_projections: M directions per example for ``ssm``.
        variance_reduction: ``ssm`` with the ½|s|² term (SSM-VR) instead of ½(vᵀs)².
        langevin_steps: K steps of Langevin dynamics per sample.
        langevin_step_size: η, the step size (data units²).
        denoise: end sampling with the Tweedie step x + σ² s(x).
        lr, grad_clip, batch_size, steps: training (Adam; 0 disables clipping).
        ema_decay: the harness evaluates and saves an exponential moving average of the weights with
            this decay (None: the raw weights).
        seed: seeds the parameter initialisation (a forked torch RNG).
    """

    objective: Literal["ism", "ssm", "dsm"] = "dsm"
    sigma: float = 0.2
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    num_projections: int = 1
    variance_reduction: bool = True
    langevin_steps: int = 500
    langevin_step_size: float = 0.004
    denoise: bool = True
    lr: float = 1e-3
    grad_clip: float = 10.0
    batch_size: int = 256
    steps: int = 3000
    ema_decay: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in ("ism", "ssm", "dsm"):
            raise ValueError(f"objective must be 'ism', 'ssm' or 'dsm', got {self.objective!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be > 0 (the noise of the smoothed density), got {self.sigma}")
        for name in ("dim", "hidden", "depth", "num_projections", "langevin_steps", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.langevin_step_size) and self.langevin_step_size > 0):
            raise ValueError(f"langevin_step_size must be > 0, got {self.langevin_step_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")


class ScoreMatching(nn.Module):
    """A score network at one noise level with Langevin sampling (Sampler, Score; trainable).

    ``ScoreMatching(**overrides)`` builds from :class:`ScoreMatchingConfig` (unknown keys rejected).
    ``score(x)`` [B, D] -> [B, D] is ∇_x log q_σ(x) as learned, in 1 / data units.
    """

    def __init__(self, **overrides: object) -> None:
        super().__init__()
        self.config = ScoreMatchingConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.data_spec = DataSpec((cfg.dim,), "continuous", (-1.0, 1.0))
        self.score_noise_std = float(cfg.sigma)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = MLP(cfg.dim, cfg.dim, hidden=cfg.hidden, depth=cfg.depth)
        self.register_buffer("data_mean", torch.zeros(cfg.dim))
        self.register_buffer("data_var", torch.ones(cfg.dim))
        self.register_buffer("initialized", torch.zeros(()))  # 1 once the first batch set the init moments
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = cfg.ema_decay

    def score(self, x: Tensor) -> Tensor:
        """s_θ(x) = net(x) / σ, [B, D] for x [B, D]."""
        return self.net(x.to(self.data_mean.dtype)) / self.config.sigma

    def loss(self, x: Tensor, *, generator: torch.Generator) -> Tensor:
        """The σ²-weighted objective, mean over the batch x [B, D] (clean rows); noise from ``generator``."""
        cfg = self.config
        x = x.to(self.data_mean.dtype)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        if cfg.objective == "dsm":
            per_example = dsm_loss(self.score, x, eps, cfg.sigma)
        elif cfg.objective == "ism":
            per_example = ism_loss(self.score, x + cfg.sigma * eps)
        else:
            v = torch.randn((len(x), cfg.num_projections, cfg.dim), generator=generator, dtype=x.dtype).to(x.device)
            per_example = ssm_loss(self.score, x + cfg.sigma * eps, v, variance_reduction=cfg.variance_reduction)
        return cfg.sigma**2 * per_example.mean()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One Adam step on the objective; the first batch also sets the Langevin initialisation's moments."""
        x = batch.reshape(len(batch), -1).to(self.data_mean.dtype)
        if not bool(self.initialized):
            with torch.no_grad():
                self.data_mean.copy_(x.mean(0))
                self.data_var.copy_(x.var(0, unbiased=True) if len(x) > 1 else torch.ones_like(self.data_var))
                self.initialized.fill_(1)
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss = self.loss(x, generator=generator)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        opt.step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, D] samples by Langevin dynamics (module docstring); all noise per example from ``rng``."""
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        cfg = self.config
        device, dtype = self.data_mean.device, self.data_mean.dtype
        x = self.data_mean + self.data_var.sqrt() * rng.child("langevin-init").normal((cfg.dim,)).to(device, dtype)
        z = rng.normal((cfg.langevin_steps, cfg.dim)).to(device, dtype)  # [n, K, D]
        eta = cfg.langevin_step_size
        for k in range(cfg.langevin_steps):
            x = x + 0.5 * eta * self.score(x) + math.sqrt(eta) * z[:, k]
        if cfg.denoise:
            x = x + cfg.sigma**2 * self.score(x)
        return x.float()


ScoreMatching.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(ScoreMatchingConfig)])


def _with_objective(objective: str, overrides: dict[str, object]) -> ScoreMatching:
    others = {o: f"score-{o}" for o in ("ism", "ssm", "dsm")}
    return ScoreMatching(**pinned(f"score-{objective}", "objective", objective, overrides, others))


def score_ism(**overrides: object) -> ScoreMatching:
    """:class:`ScoreMatching` trained by implicit score matching (the registry's ``score-ism``)."""
    return _with_objective("ism", overrides)


def score_ssm(**overrides: object) -> ScoreMatching:
    """:class:`ScoreMatching` trained by sliced score matching (the registry's ``score-ssm``)."""
    return _with_objective("ssm", overrides)


def score_dsm(**overrides: object) -> ScoreMatching:
    """:class:`ScoreMatching` trained by denoising score matching (the registry's ``score-dsm``)."""
    return _with_objective("dsm", overrides)


_TINY = {"hidden": 16, "depth": 2, "steps": 20, "batch_size": 64, "langevin_steps": 10}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("score-ism", "score", "baselines.score_matching:score_ism",
               "score network at one noise sigma trained by implicit score matching (exact Hessian trace), "
               "sampled by Langevin dynamics; rows", tiny_config=_TINY),
    ModelEntry("score-ssm", "score", "baselines.score_matching:score_ssm",
               "score network at one noise sigma trained by sliced score matching (random projections, SSM-VR), "
               "sampled by Langevin dynamics; rows", tiny_config=_TINY),
    ModelEntry("score-dsm", "score", "baselines.score_matching:score_dsm",
               "score network at one noise sigma trained by denoising score matching, sampled by Langevin "
               "dynamics; rows", tiny_config=_TINY),
)
