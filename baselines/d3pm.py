"""D3PM: discrete denoising diffusion (Austin et al. 2021, "Structured Denoising Diffusion Models in
Discrete State-Spaces", NeurIPS; seed 004#1) on images of K grey levels.

Forward process (per pixel, one-hot row vectors; Austin et al. eq. 1-3): q(x_t | x_{t−1}) =
Cat(x_{t−1} Q_t), q(x_t | x_0) = Cat(x_0 Q̄_t) with Q̄_t = Q_1 ⋯ Q_t, t = 1..T. Transition matrices
(``transition``), over S states:

* ``"uniform"`` (S = K): [Q_t]_ij = (1 − β_t) 1{i = j} + β_t / K; stationary: uniform.
* ``"absorbing"`` (S = K + 1, the extra state m = K is [MASK]): [Q_t]_ij = (1 − β_t) 1{i = j ≠ m}
  + β_t 1{j = m} + 1{i = j = m}; stationary: all [MASK].
* ``"gaussian"`` (S = K, discretized Gaussian, Austin et al. Appendix A.2.2): for i ≠ j,
  [Q_t]_ij = exp(−4 (i − j)² / ((K − 1)² β_t)) / Σ_{n=−(K−1)}^{K−1} exp(−4 n² / ((K − 1)² β_t)), and the
  diagonal takes the rest of the row; the matrix is symmetric and doubly stochastic, so the
  stationary distribution is uniform, and mass moves mostly to nearby grey levels.

Schedules β_t (``schedule``; "auto" picks per transition; the seed notes give none, so these
defaults are ours): ``"cosine"`` β_t = 1 − ᾱ_t / ᾱ_{t−1} with ᾱ_t = cos²((t/T + 0.008)/1.008 · π/2)
(Nichol & Dhariwal 2021's cosine schedule, used for uniform); ``"jsd"`` β_t = 1 / (T − t + 1) (the
absorbing probability after t steps is t/T; used for absorbing); ``"linear"`` β_t from
``beta_start`` to ``beta_end`` (used for the discretized Gaussian). Every β_t is capped at 1.

Reverse process, x_0-parameterisation (Austin et al. eq. 4): a network predicts p̃_θ(x̃_0 | x_t) over
the K data levels and p_θ(x_{t−1} | x_t) ∝ Σ_{x̃_0} q(x_{t−1}, x_t | x̃_0) p̃_θ(x̃_0 | x_t)
= [x_t Q_tᵀ] ⊙ [p̃_θ Q̄_{t−1}] (per pixel, normalised over the S states); at t = 1,
p_θ(x_0 | x_1) = p̃_θ(x_0 | x_1).

Objectives (``hybrid_lambda``): L_vlb, one uniformly drawn t per example: t ≥ 2 gives
KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), t = 1 gives −log p̃_θ(x_0 | x_1); and the hybrid
L_λ = L_vlb + λ L_CE with L_CE = −log p̃_θ(x_0 | x_t) at the same x_t (Austin et al. sec. 3.4;
λ = 0.001 in the paper's image runs). Losses are reported per dimension (nats).

Bound (LowerBound): log p(x_0) ≥ −[KL(q(x_T | x_0) ‖ p(x_T)) + Σ_{t=2}^T E KL(q(x_{t−1}|x_t, x_0) ‖
p_θ(x_{t−1}|x_t)) + E −log p̃_θ(x_0 | x_1)], every t evaluated at one x_t ~ q(x_t | x_0) (T network
calls). The data are discrete, so this is a bound on the probability mass: no dequantization.

Sampling: x_T from the prior (uniform levels, or all [MASK]), then T ancestral steps; NFE = T. Each
categorical draw is the inverse CDF at one uniform per pixel from the example's ``rng``.

Network: :class:`baselines.nets.SmallUNet`; its input is the level scaled to [−1, 1] (0 for
[MASK]) and, for absorbing, a mask-indicator channel per image channel; its output is K logits per
pixel; time enters as t / T.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.nets import SmallUNet
from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.schedule import linear_decay
from harness.core.validate import chain_bound_call, finite_positive, in_choices, positive_ints, unit_interval

__all__ = ["D3PM", "D3PMConfig", "REGISTRY", "transition_matrices"]

TRANSITIONS = ("uniform", "absorbing", "gaussian")
SCHEDULES = ("auto", "cosine", "jsd", "linear")
_AUTO = {"uniform": "cosine", "absorbing": "jsd", "gaussian": "linear"}
_TINY_LOG = 1e-30


def betas(schedule: str, steps: int, beta_start: float = 0.02, beta_end: float = 1.0) -> Tensor:
    """[T] float64 β_1..β_T of a named schedule (module docstring), each in (0, 1]."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    if schedule == "cosine":
        f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + 0.008) / 1.008 * math.pi / 2) ** 2
        out = 1.0 - f[1:] / f[:-1]
    elif schedule == "jsd":
        out = 1.0 / (steps - t + 1.0)
    elif schedule == "linear":
        out = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES[1:]}, got {schedule!r}")
    return out.clamp(1e-12, 1.0)


def transition_matrices(transition: str, levels: int, beta: Tensor) -> Tensor:
    """[T, S, S] float64 one-step matrices Q_t (rows: from, columns: to) for β [T] (module docstring)."""
    k = levels
    eye = torch.eye(k, dtype=torch.float64)
    if transition == "uniform":
        return (1.0 - beta)[:, None, None] * eye + (beta / k)[:, None, None] * torch.ones(k, k, dtype=torch.float64)
    if transition == "absorbing":
        q = torch.zeros(len(beta), k + 1, k + 1, dtype=torch.float64)
        idx = torch.arange(k)
        q[:, idx, idx] = (1.0 - beta)[:, None]
        q[:, :k, k] = beta[:, None]
        q[:, k, k] = 1.0
        return q
    if transition == "gaussian":
        diff = torch.arange(k, dtype=torch.float64)
        dist2 = (diff[:, None] - diff[None, :]) ** 2
        n = torch.arange(-(k - 1), k, dtype=torch.float64)
        scale = 4.0 / ((k - 1) ** 2 * beta)  # [T]
        norm = torch.exp(-scale[:, None] * n[None] ** 2).sum(-1)  # [T]
        q = torch.exp(-scale[:, None, None] * dist2[None]) / norm[:, None, None]
        q = q * (1.0 - eye)
        return q + torch.diag_embed(1.0 - q.sum(-1))
    raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")


@dataclass(frozen=True)
class D3PMConfig:
    """Hyper-parameters of a D3PM (saved in checkpoints).

    Attributes:
        transition: ``"uniform"``, ``"absorbing"`` or ``"gaussian"``.
        levels: K, the grey levels of the data (2..256): train on ``<images>-q<K>-*`` data.
        num_timesteps: T (small on a CPU: the bound and sampling take T network calls).
        schedule: ``"auto"`` (cosine / jsd / linear for uniform / absorbing / gaussian), or one of them.
        beta_start, beta_end: the ``"linear"`` schedule's end points.
        hybrid_lambda: λ of L_λ = L_vlb + λ L_CE (0: L_vlb alone; the paper's image runs use 0.001).
        shape: (C, H, W), H and W divisible by 4.
        base, time_dim: SmallUNet width and time-embedding size.
        lr, batch_size, steps: Adam learning rate and ``genbench train`` defaults.
        lr_schedule: ``"constant"`` or ``"linear"`` (to 0 at ``steps``).
        grad_clip: gradient-norm clip (0: none).
        ema_decay: EMA of the weights kept by the harness (0: none).
        seed: seed of the weight initialisation.
    """

    transition: str = "gaussian"
    levels: int = 4
    num_timesteps: int = 40
    schedule: str = "auto"
    beta_start: float = 0.02
    beta_end: float = 1.0
    hybrid_lambda: float = 0.0
    shape: tuple[int, ...] = (1, 28, 28)
    base: int = 32
    time_dim: int = 32
    lr: float = 2e-4
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    batch_size: int = 64
    steps: int = 3000
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        in_choices(self, "transition", TRANSITIONS)
        in_choices(self, "schedule", SCHEDULES)
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be an int in 2..256 (the data's grey levels), got {self.levels!r}")
        positive_ints(self, "num_timesteps", "base", "time_dim", "batch_size", "steps")
        if not 0.0 < self.beta_start <= self.beta_end <= 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end <= 1, got {self.beta_start!r}, {self.beta_end!r}")
        for name in ("hybrid_lambda", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        unit_interval(self, "ema_decay", hint=" (0: no EMA)")
        finite_positive(self, "lr")
        in_choices(self, "lr_schedule", ("constant", "linear"))
        if len(self.shape) != 3 or any(s < 1 for s in self.shape) or self.shape[1] % 4 or self.shape[2] % 4:
            raise ValueError(f"shape must be (C, H, W) with H and W divisible by 4 (SmallUNet), got {self.shape}")


class D3PM(nn.Module):
    """Discrete diffusion over K grey levels; a Sampler (NFE = T) and a LowerBound (module docstring).

    Config: :class:`D3PMConfig` (keyword arguments of the constructor).
    """

    supports_importance_sampling = False  # elbo() is the T-term bound (no importance-weighted form)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        c = D3PMConfig(**kwargs)
        self.config = c
        self.T, self.K = c.num_timesteps, c.levels
        self.absorbing = c.transition == "absorbing"
        self.S = self.K + 1 if self.absorbing else self.K
        schedule = _AUTO[c.transition] if c.schedule == "auto" else c.schedule
        q = transition_matrices(c.transition, self.K, betas(schedule, self.T, c.beta_start, c.beta_end))
        bar = [torch.eye(self.S, dtype=torch.float64)]
        for t in range(self.T):
            bar.append(bar[-1] @ q[t])
        # index t of q_onestep is Q_t (index 0 unused); q_bar[t] = Q̄_t with Q̄_0 = I.
        self.register_buffer("q_onestep", torch.cat([torch.eye(self.S, dtype=torch.float64)[None], q]), persistent=False)
        self.register_buffer("q_bar", torch.stack(bar), persistent=False)
        channels = c.shape[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.net = SmallUNet(2 * channels if self.absorbing else channels, channels * self.K, base=c.base,
                                 time_dim=c.time_dim)
        self.data_spec = DataSpec(c.shape, "discrete", num_categories=self.K)
        self.default_steps, self.default_batch_size = c.steps, c.batch_size

    @property
    def ema_decay(self) -> float | None:
        return self.config.ema_decay or None

    # ----- the forward process ------------------------------------------------------------------

    def prior(self) -> Tensor:
        """[S] float64 p(x_T): uniform over the K levels, or all mass on [MASK]."""
        if self.absorbing:
            return F.one_hot(torch.tensor(self.K), self.S).to(torch.float64)
        return torch.full((self.S,), 1.0 / self.K, dtype=torch.float64)

    def q_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0) [*x0.shape, S] float64 for levels x0 (int64, any shape [B, ...]) and t [B] in 0..T."""
        view = (-1, *([1] * (x0.dim() - 1)))
        return self.q_bar[t.reshape(view), x0]

    def true_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """q(x_{t−1} | x_t, x_0) [*x0.shape, S] float64 for t [B] in 2..T: Q_t[:, x_t] ⊙ Q̄_{t−1}[x_0, :], normalised."""
        view = (-1, *([1] * (x0.dim() - 1)))
        fact1 = self.q_onestep[t.reshape(view), :, xt]  # [*, S]: q(x_t | x_{t−1} = s) for every s
        fact2 = self.q_bar[(t - 1).reshape(view), x0]
        joint = fact1 * fact2
        return joint / joint.sum(-1, keepdim=True)

    def model_reverse(self, p_tilde: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """p_θ(x_{t−1} | x_t) [*xt.shape, S] float64 from p̃ [*xt.shape, K] (eq. 4), t [B] in 2..T."""
        view = (-1, *([1] * (xt.dim() - 1)))
        fact1 = self.q_onestep[t.reshape(view), :, xt]
        bar = self.q_bar[(t - 1)][:, : self.K]  # [B, K, S]: Q̄_{t−1} rows of the data levels
        fact2 = torch.einsum("b...k,bks->b...s", p_tilde.to(torch.float64), bar)
        joint = fact1 * fact2
        return joint / joint.sum(-1, keepdim=True).clamp_min(_TINY_LOG)

    def sample_categorical(self, probs: Tensor, u: Tensor) -> Tensor:
        """Inverse-CDF draws: int64 [*u.shape] from probs [*u.shape, S] at uniforms u in [0, 1).

        The draw is the first state whose CDF exceeds u·total, so it always has positive probability
        (u = 0 included, which ``torch.rand`` returns once in 2^24 draws: a state of probability 0,
        such as a data level other than x_0 in the absorbing chain, would make the posterior 0/0)."""
        cdf = probs.cumsum(-1)
        return (cdf <= (u.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1)).sum(-1).clamp_max(probs.shape[-1] - 1)

    # ----- the network --------------------------------------------------------------------------

    def x0_logits(self, xt: Tensor, t: Tensor) -> Tensor:
        """log p̃_θ(x̃_0 | x_t) up to a constant: [B, C, H, W, K] logits for x_t int64 [B, C, H, W], t [B] in 1..T."""
        mask = xt == self.K
        value = torch.where(mask, torch.zeros_like(xt), xt).to(torch.float32) * (2.0 / (self.K - 1)) - 1.0
        value = torch.where(mask, torch.zeros_like(value), value)
        inp = torch.cat([value, mask.to(torch.float32)], 1) if self.absorbing else value
        b, c, h, w = xt.shape
        out = self.net(inp, t.to(torch.float32) / self.T)
        return out.reshape(b, c, self.K, h, w).permute(0, 1, 3, 4, 2)

    # ----- objectives -----------------------------------------------------------------------------

    def vlb_term(self, x0: Tensor, xt: Tensor, t: Tensor, log_p_tilde: Tensor) -> Tensor:
        """The bound's term at t per pixel, [*x0.shape] nats: KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) for t ≥ 2,
        −log p̃(x_0 | x_1) for t = 1. ``log_p_tilde`` [*x0.shape, K] are normalised log-probabilities."""
        nll0 = -log_p_tilde.gather(-1, x0.unsqueeze(-1)).squeeze(-1).to(torch.float64)
        t_safe = t.clamp_min(2)
        q = self.true_posterior(x0, xt, t_safe)
        p = self.model_reverse(log_p_tilde.exp(), xt, t_safe)
        kl = (q * (torch.log(q.clamp_min(_TINY_LOG)) - torch.log(p.clamp_min(_TINY_LOG)))).sum(-1)
        view = (-1, *([1] * (x0.dim() - 1)))
        return torch.where(t.reshape(view) == 1, nll0, kl)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) ‖ p(x_T)) per pixel, [*x0.shape] nats."""
        q = self.q_bar[self.T][x0]
        prior = self.prior().to(q.device)
        return (q * (torch.log(q.clamp_min(_TINY_LOG)) - torch.log(prior.clamp_min(_TINY_LOG)))).sum(-1)

    def losses(self, x0: Tensor, t: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(L_vlb term, L_CE) per example, each [B] nats per dimension, at x_t drawn with uniforms u [*x0.shape]."""
        xt = self.sample_categorical(self.q_probs(x0, t), u)
        log_p = F.log_softmax(self.x0_logits(xt, t).to(torch.float32), dim=-1)
        vlb = self.vlb_term(x0, xt, t, log_p).flatten(1).mean(-1)
        ce = -log_p.gather(-1, x0.unsqueeze(-1)).squeeze(-1).flatten(1).mean(-1)
        return vlb, ce

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One Adam step on L_vlb (+ λ L_CE): t ~ U{1..T} and the draw of x_t come from ``generator``."""
        (opt,) = optimizers
        c = self.config
        if c.lr_schedule == "linear":
            linear_decay(opt, c.lr, step, 0, c.steps)
        x0 = batch.to(torch.int64)
        t = torch.randint(1, self.T + 1, (x0.shape[0],), generator=generator).to(x0.device)
        u = torch.rand(x0.shape, generator=generator).to(x0.device)
        vlb, ce = self.losses(x0, t, u)
        loss = vlb.mean() + c.hybrid_lambda * ce.mean() if c.hybrid_lambda else vlb.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), c.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), "vlb_term": float(vlb.detach().mean()), "ce": float(ce.detach().mean())}

    # ----- bound and sampling -------------------------------------------------------------------

    @torch.no_grad()
    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """The T-term bound on log p(x_0) (module docstring), [B] nats, for levels x int64 [B, C, H, W].

        The x_t of step t = 1..T is drawn with the t-th ``rng.uniform(shape)`` per example (so an
        example's bound is the same in any batch), or from ``generator`` (the global RNG when None).
        ``num_importance > 1`` raises NotImplementedError.
        """
        chain_bound_call("D3PM", x.shape[0], num_importance, rng, generator)
        x0 = x.to(self.q_bar.device).to(torch.int64)
        b = x0.shape[0]
        total = self.prior_kl(x0).flatten(1).sum(-1)
        for i in range(1, self.T + 1):
            t = torch.full((b,), i, dtype=torch.long, device=x0.device)
            u = rng.uniform(x0.shape[1:]) if rng is not None else torch.rand(x0.shape, generator=generator)
            xt = self.sample_categorical(self.q_probs(x0, t), u.to(x0.device))
            log_p = F.log_softmax(self.x0_logits(xt, t).to(torch.float32), dim=-1)
            total = total + self.vlb_term(x0, xt, t, log_p).flatten(1).sum(-1)
        return -total

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, C, H, W] int64 levels: x_T from the prior, then T ancestral steps (NFE = T)."""
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        device = self.q_bar.device
        shape = self.config.shape
        if self.absorbing:
            x = torch.full((n, *shape), self.K, dtype=torch.int64, device=device)
        else:
            x = rng.randint(self.K, shape).to(device)
        for i in range(self.T, 0, -1):
            t = torch.full((n,), i, dtype=torch.long, device=device)
            p_tilde = F.softmax(self.x0_logits(x, t).to(torch.float32), dim=-1)
            probs = p_tilde.to(torch.float64) if i == 1 else self.model_reverse(p_tilde, x, t)
            x = self.sample_categorical(probs, rng.uniform(shape).to(device))
        return x.clamp_max(self.K - 1)  # p̃ puts no mass on [MASK], so x_0 is a data level


def d3pm_factory(transition: str) -> Any:
    others = {t: f"d3pm-{t}" for t in TRANSITIONS if t != transition}

    def build(**overrides: Any) -> D3PM:
        return D3PM(**pinned(f"d3pm-{transition}", "transition", transition, overrides, others))

    build.__signature__ = inspect.signature(D3PMConfig)  # type: ignore[attr-defined]
    build.__doc__ = f"``d3pm-{transition}``: :class:`D3PM` with ``transition={transition!r}``."
    return build


d3pm_uniform, d3pm_absorbing, d3pm_gaussian = (d3pm_factory(t) for t in TRANSITIONS)

_TINY = {"levels": 4, "num_timesteps": 4, "base": 8, "time_dim": 8, "batch_size": 8, "steps": 5}
REGISTRY: tuple[ModelEntry, ...] = tuple(
    ModelEntry(f"d3pm-{t}", "discrete-diffusion", f"baselines.d3pm:d3pm_{t}",
               f"D3PM (Austin et al. 2021), {t} transition matrix, x0-parameterisation, L_vlb or hybrid L_lambda "
               f"(hybrid_lambda=0.001); K grey levels (levels=K, data <images>-q<K>-*): exact discrete bound + "
               "ancestral sampler, NFE = T", tiny_config=dict(_TINY))
    for t in TRANSITIONS)
