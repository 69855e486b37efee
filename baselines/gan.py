"""Generative adversarial networks: NS-GAN, WGAN, WGAN-GP and LSGAN with MLP or DCGAN nets.

One class, :class:`GAN`, configured by :class:`GANConfig` (``objective`` picks the losses,
``arch`` the networks). The generator is ``self.net`` (what ``harness.core.nfe`` counts); the
discriminator / critic is ``self.critic``. Capability: ``Sampler`` only (no density).

Objectives (D is the discriminator / critic, G the generator, x ~ data, z ~ N(0, I)):

* ``"ns"`` — Goodfellow et al. 2014, eq. 1 for D (maximise log D(x) + log(1 − D(G(z))), D a
  sigmoid of the logit ``critic(x)``) and the *non-saturating* generator loss of their sec. 3,
  −log D(G(z)) (instead of log(1 − D(G(z)))). k = ``n_critic`` = 1 D update per G update.
* ``"wgan"`` — Arjovsky et al. 2017, Algorithm 1: critic maximises E[f(x)] − E[f(G(z))] (the
  Kantorovich–Rubinstein dual of W1, their eq. 3) with every critic parameter clipped to
  [−c, c] after each update (c = 0.01), RMSprop(lr 5e-5), n_critic = 5; G minimises −E[f(G(z))].
* ``"wgan-gp"`` — Gulrajani et al. 2017, eq. 3 / Algorithm 1: critic loss
  E[f(x̃)] − E[f(x)] + λ E[(‖∇_x̂ f(x̂)‖₂ − 1)²] with x̂ = εx + (1 − ε)x̃, ε ~ U[0, 1] per example,
  λ = 10, Adam(1e-4, β = (0, 0.9)), n_critic = 5. No BatchNorm in the critic (their sec. 4: it
  would make the penalty depend on the batch); the DCGAN critic uses layer normalisation instead.
* ``"lsgan"`` — Mao et al. 2017, eq. 2 with a = 0, b = 1, c = 1: D minimises
  ½E[(D(x) − 1)²] + ½E[D(G(z))²]; G minimises ½E[(D(G(z)) − 1)²]; D is linear (no sigmoid).

Networks:

* ``"mlp"`` (data shape (D,)): generator and critic are :class:`baselines.nets.MLP` with ReLU
  hidden layers (the toy setting of Gulrajani et al. 2017: 3 hidden layers of 512); the
  generator output is linear (2-D toy data are not bounded to (−1, 1)), optionally rescaled by
  ``data_scale``.
* ``"dcgan"`` (data shape (C, H, W), H and W divisible by 4, e.g. 28×28×1): Radford et al. 2016
  guidelines — G: z → ConvT(H/4×W/4) → 4b·… → BatchNorm + ReLU, two stride-2 transposed convs,
  Tanh output in (−1, 1); D: two stride-2 convs with LeakyReLU(0.2) (BatchNorm on the second
  for ``ns``/``wgan``/``lsgan``, a per-example layer norm for ``wgan-gp``), then a full-size conv
  to one logit.

Batches and counting. The harness calls :meth:`GAN.training_step` once per *generator update*
(its ``step``). One call does ``n_critic`` critic updates and then one generator update. The
harness batch of B real rows is split into ``n_critic`` chunks (``torch.chunk``), critic update k
using chunk k, so every critic update sees fresh data as in the papers' algorithms; the
model's ``default_batch_size`` is therefore ``n_critic × batch_size`` where ``batch_size`` is
the per-update batch m of the papers. Each critic / generator update draws its own fake batch
(the size of the real chunk). All noise (z, ε) comes from the harness's ``generator``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from baselines.nets import MLP
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.schedule import linear_decay

__all__ = [
    "GAN",
    "GANConfig",
    "REGISTRY",
    "clip_weights_",
    "gradient_penalty",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "ns_discriminator_loss",
    "ns_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]

OBJECTIVES = ("ns", "wgan", "wgan-gp", "lsgan")
ARCHS = ("mlp", "dcgan")
CRITIC_NORMS = ("batch", "layer", "none")

# Per-objective defaults: (lr_g, lr_d, optimizer, betas, n_critic), from each paper's experiments.
_DEFAULTS: dict[str, dict[str, Any]] = {
    # DCGAN's Adam(2e-4, β1 = 0.5) (Radford et al. 2016, sec. 4), k = 1 (Goodfellow et al. 2014, Alg. 1)
    "ns": {"lr_g": 2e-4, "lr_d": 2e-4, "optimizer": "adam", "betas": (0.5, 0.999), "n_critic": 1},
    # Arjovsky et al. 2017, Algorithm 1: α = 5e-5, RMSprop, n_critic = 5, c = 0.01
    "wgan": {"lr_g": 5e-5, "lr_d": 5e-5, "optimizer": "rmsprop", "betas": (0.0, 0.0), "n_critic": 5},
    # Gulrajani et al. 2017, Algorithm 1: α = 1e-4, β1 = 0, β2 = 0.9, n_critic = 5, λ = 10
    "wgan-gp": {"lr_g": 1e-4, "lr_d": 1e-4, "optimizer": "adam", "betas": (0.0, 0.9), "n_critic": 5},
    # Mao et al. 2017 follow DCGAN's Adam(β1 = 0.5); lr 2e-4 as DCGAN
    "lsgan": {"lr_g": 2e-4, "lr_d": 2e-4, "optimizer": "adam", "betas": (0.5, 0.999), "n_critic": 1},
}


# ----------------------------------------------------------------------------------------------
# Losses (pure functions of critic outputs; each returns a scalar to *minimise*)
# ----------------------------------------------------------------------------------------------


def ns_discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """−E[log σ(d_real)] − E[log(1 − σ(d_fake))] (Goodfellow et al. 2014, eq. 1, negated).

    ``d_real`` [B], ``d_fake`` [B']: discriminator *logits*; D(x) = σ(logit). Computed with
    softplus for stability: −log σ(a) = softplus(−a), −log(1 − σ(a)) = softplus(a).
    """
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def ns_generator_loss(d_fake: Tensor) -> Tensor:
    """−E[log D(G(z))] = E[softplus(−logit)], the non-saturating loss (Goodfellow et al. 2014, sec. 3)."""
    return F.softplus(-d_fake).mean()


def wasserstein_critic_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[f(G(z))] − E[f(x)]: minus the critic's W1 estimate (Arjovsky et al. 2017, eq. 3 / Alg. 1)."""
    return d_fake.mean() - d_real.mean()


def wasserstein_generator_loss(d_fake: Tensor) -> Tensor:
    """−E[f(G(z))] (Arjovsky et al. 2017, Algorithm 1, line 10)."""
    return -d_fake.mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, eps: Tensor, *, weight: float = 10.0) -> Tensor:
    """λ E[(‖∇_x̂ f(x̂)‖₂ − 1)²], x̂ = ε x + (1 − ε) x̃ (Gulrajani et al. 2017, eq. 3).

    real, fake [B, *shape]; ``eps`` [B] in [0, 1] (drawn by the caller, from the training
    generator). The gradient is per example, flattened over all data dimensions, and the graph
    is kept (``create_graph``) so the penalty trains the critic.
    """
    shape = (-1,) + (1,) * (real.dim() - 1)
    x_hat = (eps.view(shape) * real + (1.0 - eps.view(shape)) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return weight * (norm - 1.0).pow(2).mean()


def lsgan_discriminator_loss(d_real: Tensor, d_fake: Tensor, *, a: float = 0.0, b: float = 1.0) -> Tensor:
    """½E[(D(x) − b)²] + ½E[(D(G(z)) − a)²] (Mao et al. 2017, eq. 2; a = 0, b = 1)."""
    return 0.5 * (d_real - b).pow(2).mean() + 0.5 * (d_fake - a).pow(2).mean()


def lsgan_generator_loss(d_fake: Tensor, *, c: float = 1.0) -> Tensor:
    """½E[(D(G(z)) − c)²] (Mao et al. 2017, eq. 2; c = 1)."""
    return 0.5 * (d_fake - c).pow(2).mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip: float) -> None:
    """Clamp every parameter of ``module`` to [−clip, clip] in place (Arjovsky et al. 2017, Alg. 1, line 7)."""
    for p in module.parameters():
        p.clamp_(-clip, clip)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class MLPGenerator(nn.Module):
    """z [B, Z] -> x = data_scale · MLP(z) [B, D] (ReLU hidden layers, linear output)."""

    def __init__(self, latent_dim: int, dim: int, hidden: int, depth: int, data_scale: float) -> None:
        super().__init__()
        self.body = MLP(latent_dim, dim, hidden=hidden, depth=depth, activation=nn.ReLU)
        self.data_scale = data_scale

    def forward(self, z: Tensor) -> Tensor:
        return self.data_scale * self.body(z)


class MLPCritic(nn.Module):
    """x [B, D] -> logit / critic value MLP(x / data_scale) [B] (ReLU hidden layers)."""

    def __init__(self, dim: int, hidden: int, depth: int, data_scale: float) -> None:
        super().__init__()
        self.body = MLP(dim, 1, hidden=hidden, depth=depth, activation=nn.ReLU)
        self.data_scale = data_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x / self.data_scale).squeeze(-1)


class DCGANGenerator(nn.Module):
    """z [B, Z] -> images [B, C, H, W] in (−1, 1) (Radford et al. 2016; H, W divisible by 4).

    ConvT(Z → 4b, kernel H/4×W/4) → BN → ReLU → ConvT(4b → 2b, 4, s2) → BN → ReLU →
    ConvT(2b → C, 4, s2) → Tanh. For 28×28: 7×7 → 14×14 → 28×28.
    """

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], base: int) -> None:
        super().__init__()
        c, h, w = shape
        self.latent_dim = latent_dim
        self.body = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * base, (h // 4, w // 4), 1, 0, bias=False),
            nn.BatchNorm2d(4 * base), nn.ReLU(True),
            nn.ConvTranspose2d(4 * base, 2 * base, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * base), nn.ReLU(True),
            nn.ConvTranspose2d(2 * base, c, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z[:, :, None, None])


class DCGANCritic(nn.Module):
    """x [B, C, H, W] -> logit / critic value [B] (Radford et al. 2016: strided convs, LeakyReLU(0.2)).

    Conv(C → b, 4, s2) → LReLU → Conv(b → 2b, 4, s2) → norm → LReLU → Conv(2b → 1, H/4×W/4).
    ``norm``: ``"batch"`` (DCGAN), ``"layer"`` (GroupNorm with one group = layer norm over
    (C, H, W) per example; Gulrajani et al. 2017, sec. 4) or ``"none"``.
    """

    def __init__(self, shape: tuple[int, int, int], base: int, norm: str) -> None:
        super().__init__()
        c, h, w = shape
        norm_layer: nn.Module = {"batch": lambda: nn.BatchNorm2d(2 * base), "layer": lambda: nn.GroupNorm(1, 2 * base),
                                 "none": nn.Identity}[norm]()
        self.body = nn.Sequential(
            nn.Conv2d(c, base, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(base, 2 * base, 4, 2, 1, bias=norm == "none"), norm_layer, nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * base, 1, (h // 4, w // 4), 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Config and model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GANConfig:
    """Hyper-parameters of :class:`GAN`; ``None`` fields take the objective's / arch's default.

    Attributes:
        objective: ``"ns" | "wgan" | "wgan-gp" | "lsgan"`` (see the module docstring).
        data_shape: per-example shape, (D,) for rows or (C, H, W) for images.
        arch: ``"mlp"`` (rows) or ``"dcgan"`` (images); None picks by ``data_shape``.
        latent_dim: size of z ~ N(0, I); default 2 for mlp (Gulrajani et al.'s toy), 100 for dcgan.
        hidden, depth: MLP width and number of hidden layers (both nets).
        data_scale: mlp only; the nets work in units of x / data_scale (G outputs data_scale ·
            MLP(z), D reads MLP(x / data_scale)); Gulrajani et al.'s toy code divides 25gaussians
            by 2.828 the same way. The WGAN-GP penalty is on the gradient in data units.
        base_channels: DCGAN width b (G: 4b, 2b; D: b, 2b).
        critic_norm: DCGAN critic normalisation ``"batch" | "layer" | "none"``; default "layer"
            for wgan-gp, "batch" otherwise. Must not be "batch" for wgan-gp.
        lr_g, lr_d: learning rates; optimizer: ``"adam" | "rmsprop"``; betas: Adam (β1, β2).
        n_critic: critic updates per generator update.
        gp_weight: λ of WGAN-GP; clip: c of WGAN.
        batch_size: per-update batch m (the harness batch is n_critic × m).
        steps: default number of generator updates for ``genbench train``, and the horizon of
            the linear schedule.
        lr_schedule: ``"constant"`` or ``"linear"`` (both learning rates decay linearly from
            their value to 0 at generator update ``steps``, as in Gulrajani et al.'s CIFAR-10
            ResNet code; pass the same ``steps`` to the harness).
        ema_decay: optional EMA of the weights kept by the harness (None: off).
    """

    objective: str = "wgan-gp"
    data_shape: tuple[int, ...] = (2,)
    arch: str | None = None
    latent_dim: int | None = None
    hidden: int = 512
    depth: int = 3
    data_scale: float = 1.0
    base_channels: int = 64
    critic_norm: str | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    optimizer: str | None = None
    betas: tuple[float, float] | None = None
    n_critic: int | None = None
    gp_weight: float = 10.0
    clip: float = 0.01
    batch_size: int | None = None
    steps: int | None = None
    lr_schedule: str = "constant"
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {OBJECTIVES}")
        shape = tuple(int(s) for s in self.data_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"data_shape must be positive sizes, got {self.data_shape!r}")
        put("data_shape", shape)
        arch = self.arch if self.arch is not None else ("mlp" if len(shape) == 1 else "dcgan")
        if arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {ARCHS}")
        if arch == "mlp" and len(shape) != 1:
            raise ValueError(f"arch 'mlp' needs a data_shape (D,), got {shape}")
        if arch == "dcgan" and (len(shape) != 3 or shape[1] % 4 or shape[2] % 4):
            raise ValueError(f"arch 'dcgan' needs a data_shape (C, H, W) with H, W divisible by 4, got {shape}")
        put("arch", arch)
        defaults = _DEFAULTS[self.objective]
        for name in ("lr_g", "lr_d", "optimizer", "n_critic"):
            if getattr(self, name) is None:
                put(name, defaults[name])
        put("betas", tuple(float(b) for b in (self.betas if self.betas is not None else defaults["betas"])))
        if self.latent_dim is None:
            put("latent_dim", 2 if arch == "mlp" else 100)
        if self.batch_size is None:
            put("batch_size", 256 if arch == "mlp" else 64)
        if self.steps is None:
            put("steps", 2000 if arch == "mlp" else 5000)
        if self.critic_norm is None:
            put("critic_norm", "layer" if self.objective == "wgan-gp" else "batch")
        if self.critic_norm not in CRITIC_NORMS:
            raise ValueError(f"critic_norm {self.critic_norm!r} is not one of {CRITIC_NORMS}")
        if self.objective == "wgan-gp" and self.critic_norm == "batch":
            raise ValueError("critic_norm 'batch' is invalid for wgan-gp (the penalty is per example; "
                             "Gulrajani et al. 2017, sec. 4); use 'layer' or 'none'")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of ('constant', 'linear')")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer {self.optimizer!r} is not one of ('adam', 'rmsprop')")
        for name in ("latent_dim", "hidden", "depth", "base_channels", "n_critic", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.arch == "dcgan" and self.data_scale != 1.0:
            raise ValueError(f"data_scale is for arch 'mlp' (images are in (-1, 1)); got {self.data_scale!r}")
        for name in ("lr_g", "lr_d", "clip", "data_scale"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if not (math.isfinite(self.gp_weight) and self.gp_weight >= 0):
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be None or in (0, 1), got {self.ema_decay!r}")


class GAN(nn.Module):
    """A GAN: generator ``net`` (z [B, Z] -> x [B, *data_shape]) and critic ``critic`` (x -> [B]).

    Build with ``GAN(objective=..., data_shape=..., ...)`` (keywords of :class:`GANConfig`) or
    ``GAN(config=GANConfig(...))``. Parameters are drawn from a ``torch.Generator`` seeded with
    ``init_seed`` (see :func:`_init_weights`); the global RNG is left as it was.
    """

    def __init__(self, config: GANConfig | None = None, *, init_seed: int = 0, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = GANConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"pass either config or keyword options, not both (got {sorted(kwargs)})")
        self.config = config
        cfg = config
        self.data_spec = DataSpec(cfg.data_shape, "continuous", value_range=(-1.0, 1.0))
        with torch.random.fork_rng(devices=[]):  # default inits draw from the global RNG: restore it
            self._build_nets(cfg)
        _init_weights(self, cfg.arch, torch.Generator().manual_seed(init_seed))
        self.ema_decay = cfg.ema_decay
        self.default_batch_size = cfg.n_critic * cfg.batch_size
        self.default_steps = cfg.steps

    def _build_nets(self, cfg: GANConfig) -> None:
        if cfg.arch == "mlp":
            dim = cfg.data_shape[0]
            self.net: nn.Module = MLPGenerator(cfg.latent_dim, dim, cfg.hidden, cfg.depth, cfg.data_scale)
            self.critic: nn.Module = MLPCritic(dim, cfg.hidden, cfg.depth, cfg.data_scale)
        else:
            shape = (cfg.data_shape[0], cfg.data_shape[1], cfg.data_shape[2])
            self.net = DCGANGenerator(cfg.latent_dim, shape, cfg.base_channels)
            self.critic = DCGANCritic(shape, cfg.base_channels, cfg.critic_norm)

    # ---- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, *data_shape] = net(z), z ~ N(0, I) [n, latent_dim] from ``rng`` (one forward call).

        The generator runs in eval mode (BatchNorm uses its running statistics), so sample i
        does not depend on the batch it is drawn in; the previous mode is restored.
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        param = next(self.parameters())
        z = rng.normal((self.config.latent_dim,)).to(device=param.device, dtype=param.dtype)
        was_training = self.net.training
        self.net.eval()
        try:
            return self.net(z)
        finally:
            self.net.train(was_training)

    # ---- training -----------------------------------------------------------------------------

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[critic optimizer, generator optimizer]."""
        cfg = self.config

        def make(params, lr: float) -> torch.optim.Optimizer:
            if cfg.optimizer == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr)
            return torch.optim.Adam(params, lr=lr, betas=cfg.betas)

        return [make(self.critic.parameters(), cfg.lr_d), make(self.net.parameters(), cfg.lr_g)]

    def _noise(self, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator).to(device=like.device, dtype=like.dtype)

    def critic_loss(self, real: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The critic / discriminator loss on one real chunk [m, *shape] with m fresh fakes."""
        cfg = self.config
        with torch.no_grad():
            fake = self.net(self._noise(real.shape[0], generator, real))
        d_real, d_fake = self.critic(real), self.critic(fake)
        logs: dict[str, float] = {}
        if cfg.objective == "ns":
            loss = ns_discriminator_loss(d_real, d_fake)
        elif cfg.objective == "lsgan":
            loss = lsgan_discriminator_loss(d_real, d_fake)
        else:
            loss = wasserstein_critic_loss(d_real, d_fake)
            logs["wasserstein"] = float(-loss.detach())
            if cfg.objective == "wgan-gp":
                eps = torch.rand(real.shape[0], generator=generator).to(device=real.device, dtype=real.dtype)
                gp = gradient_penalty(self.critic, real, fake, eps, weight=cfg.gp_weight)
                logs["gp"] = float(gp.detach())
                loss = loss + gp
        return loss, logs

    def generator_loss(self, m: int, generator: torch.Generator, like: Tensor) -> Tensor:
        """The generator loss on m fresh fakes."""
        d_fake = self.critic(self.net(self._noise(m, generator, like)))
        if self.config.objective == "ns":
            return ns_generator_loss(d_fake)
        if self.config.objective == "lsgan":
            return lsgan_generator_loss(d_fake)
        return wasserstein_generator_loss(d_fake)

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """n_critic critic updates (one per chunk of ``batch``), then one generator update.

        ``batch`` [B, *shape] real data in model space, split into ``n_critic`` chunks with
        ``torch.chunk`` (if B < n_critic, the chunks are reused in turn). Returns the last
        critic loss ``d_loss``, the generator loss ``g_loss``, and for WGANs the critic's W1
        estimate ``wasserstein`` (and ``gp`` for wgan-gp), all of the last critic update.
        """
        cfg = self.config
        opt_d, opt_g = optimizers
        if cfg.lr_schedule == "linear":
            for opt, lr in ((opt_d, cfg.lr_d), (opt_g, cfg.lr_g)):
                linear_decay(opt, lr, step, 0, cfg.steps)
        chunks = torch.chunk(batch, cfg.n_critic)
        self.critic.requires_grad_(True)
        logs: dict[str, float] = {}
        d_loss = torch.zeros(())
        for k in range(cfg.n_critic):
            opt_d.zero_grad(set_to_none=True)
            d_loss, logs = self.critic_loss(chunks[k % len(chunks)], generator)
            d_loss.backward()
            opt_d.step()
            if cfg.objective == "wgan":
                clip_weights_(self.critic, cfg.clip)
        # generator update: the critic's weights are frozen (no gradient is accumulated in them)
        self.critic.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        g_loss = self.generator_loss(chunks[0].shape[0], generator, batch)
        g_loss.backward()
        opt_g.step()
        self.critic.requires_grad_(True)
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach()), **logs}


def _init_weights(model: GAN, arch: str, g: torch.Generator) -> None:
    """Re-initialise every parameter from ``g`` (no global RNG).

    mlp: PyTorch's Linear default, U(±1/√fan_in) for weights and biases. dcgan: N(0, 0.02) for
    conv weights and N(1, 0.02) for norm scales, zero biases (Radford et al. 2016, sec. 4).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) * 2 * bound - bound)
                if module.bias is not None:
                    module.bias.copy_(torch.rand(module.bias.shape, generator=g) * 2 * bound - bound)
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.copy_(0.02 * torch.randn(module.weight.shape, generator=g))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(1.0 + 0.02 * torch.randn(module.weight.shape, generator=g))
                module.bias.zero_()


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def _factory(objective: str):
    def build(**config: Any) -> GAN:
        given = config.pop("objective", objective)
        if given != objective:
            raise ValueError(f"this registered model trains objective {objective!r}; got objective={given!r}")
        return GAN(GANConfig(objective=objective, **config))

    build.__name__ = build.__qualname__ = objective.replace("-", "_")
    build.__doc__ = f"A :class:`GAN` with objective {objective!r}; keywords are the other :class:`GANConfig` fields."
    # advertise the real keywords (build_registered lists them when a key is unknown)
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(GANConfig)]
    )
    return build


ns_gan = _factory("ns")
wgan = _factory("wgan")
wgan_gp = _factory("wgan-gp")
lsgan = _factory("lsgan")

_TINY = {"data_shape": (2,), "hidden": 16, "depth": 2, "batch_size": 16, "steps": 5}

REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("ns-gan", "gan", "baselines.gan:ns_gan",
               "non-saturating GAN (Goodfellow et al. 2014); MLP for rows, DCGAN for images; Sampler", dict(_TINY)),
    ModelEntry("wgan", "gan", "baselines.gan:wgan",
               "WGAN with weight clipping c=0.01, RMSprop, n_critic=5 (Arjovsky et al. 2017); Sampler", dict(_TINY)),
    ModelEntry("wgan-gp", "gan", "baselines.gan:wgan_gp",
               "WGAN-GP, lambda=10, Adam(1e-4, (0, 0.9)), n_critic=5 (Gulrajani et al. 2017); Sampler", dict(_TINY)),
    ModelEntry("lsgan", "gan", "baselines.gan:lsgan",
               "least-squares GAN, a=0 b=1 c=1 (Mao et al. 2017); Sampler", dict(_TINY)),
)
