"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models", CVPR; seed 004#0): a KL-regularised autoencoder with downsampling factor f, then a flow
in its latent space, samples decoded to pixels.

Two phases in one ``harness.train`` run (as :mod:`baselines.vqvae`):

1. steps < ``ae_steps``: the autoencoder. The encoder maps x [B, C, H, W] to the mean and log-variance
   of q(z | x) on a [c, H/f, W/f] grid (``latent_channels`` = c); z = μ + σ ε; the decoder maps z back.
   Loss per pixel: ‖x − D(z)‖² / (C H W) + ``kl_weight`` · KL(q(z|x) ‖ N(0, I)) / (c h w) (the
   KL-regularised autoencoder of Rombach et al. sec. 3.1 with the squared error as its
   reconstruction loss; their perceptual and adversarial terms are left out, and the KL weight is ours).
2. steps ≥ ``ae_steps``: the autoencoder is frozen; z = μ(x) / s, with s the standard deviation of
   μ over the first phase-2 batch (the buffer behind ``latent_scale``; Rombach et al. rescale the latent to
   unit variance the same way, App. G), and conditional flow matching on the OT path (σ_min = 0;
   :mod:`baselines.flow_matching`) trains the velocity network v_θ(z_t, t) on it.

f = 1 is pixel space: no autoencoder (``ae_steps`` must be 0), the flow runs on x itself. f ∈
{2, 4, 7} on 28×28 gives latents of 14×14, 7×7 and 4×4. The velocity network is
:class:`baselines.nets.ResNet` (residual blocks at one resolution, ``width`` channels for every f),
so its cost per call scales with the latent's area at equal width.

Sampling: z(0) ~ N(0, I) from the example's ``rng``, ``sample_steps`` Euler or Heun steps of
dz/dt = v_θ(z, t) to t = 1, x = D(s · z) clamped to ``value_range``. NFE counts the velocity
network's calls (Euler N, Heun 2N); the decoder's one call per sample is not an NFE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.nets import ResNet
from harness.core import ode
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from harness.core.schedule import linear_decay
from harness.core.validate import finite_positive, in_choices, positive_ints, unit_interval

__all__ = ["LatentDiffusion", "LatentDiffusionConfig", "REGISTRY"]

FACTORS = (1, 2, 4, 7)
SAMPLERS = ("euler", "heun")


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """Hyper-parameters of a latent flow model (saved in checkpoints).

    Attributes:
        factor: f, the autoencoder's downsampling factor (1: pixel space, no autoencoder).
        latent_channels: c of the latent grid (f > 1).
        ae_base: channels of the autoencoder's convolutions.
        kl_weight: weight of the per-latent-dim KL against the per-pixel squared error.
        ae_steps: length of the autoencoder phase (0 for f = 1).
        width, blocks, time_dim: the velocity ResNet.
        shape: (C, H, W) of the data, H and W divisible by f.
        value_range: model-space range of the pixels; samples are clamped to it.
        lr: Adam learning rate of both phases. lr_schedule: ``"constant"`` or ``"linear"`` (the flow
            phase's rate decays to 0 at ``steps``).
        batch_size, steps: ``genbench train`` defaults (``steps`` counts both phases).
        sampler, sample_steps: default sampler (``euler`` or ``heun``) and its steps.
        ema_decay: EMA of the weights kept by the harness (0: none).
        seed: seed of the weight initialisation.
    """

    factor: int = 4
    latent_channels: int = 4
    ae_base: int = 32
    kl_weight: float = 1e-3
    ae_steps: int = 1000
    width: int = 64
    blocks: int = 4
    time_dim: int = 32
    shape: tuple[int, ...] = (1, 28, 28)
    value_range: tuple[float, float] = (-1.0, 1.0)
    lr: float = 1e-3
    lr_schedule: str = "constant"
    batch_size: int = 64
    steps: int = 3000
    sampler: str = "euler"
    sample_steps: int = 20
    ema_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        in_choices(self, "factor", FACTORS)
        if len(self.shape) != 3 or any(s < 1 for s in self.shape) or self.shape[1] % self.factor or self.shape[2] % self.factor:
            raise ValueError(f"shape must be (C, H, W) with H and W divisible by factor={self.factor}, got {self.shape}")
        positive_ints(self, "latent_channels", "ae_base", "width", "blocks", "time_dim", "batch_size", "steps", "sample_steps")
        if isinstance(self.ae_steps, bool) or not isinstance(self.ae_steps, int) or self.ae_steps < 0:
            raise ValueError(f"ae_steps must be an int >= 0, got {self.ae_steps!r}")
        if self.factor == 1 and self.ae_steps:
            raise ValueError("factor=1 is pixel space with no autoencoder: set ae_steps=0")
        if self.factor > 1 and not 0 < self.ae_steps < self.steps:
            raise ValueError(f"factor={self.factor} needs 0 < ae_steps < steps (an autoencoder phase, then the flow), "
                             f"got ae_steps={self.ae_steps}, steps={self.steps}")
        finite_positive(self, "kl_weight", "lr")
        in_choices(self, "lr_schedule", ("constant", "linear"))
        in_choices(self, "sampler", SAMPLERS)
        unit_interval(self, "ema_decay", hint=" (0: no EMA)")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, H/f, W/f), or the data's own shape for f = 1."""
        c, h, w = self.shape
        if self.factor == 1:
            return (c, h, w)
        return (self.latent_channels, h // self.factor, w // self.factor)


class _Encoder(nn.Module):
    def __init__(self, c_in: int, c_latent: int, base: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, base, 3, padding=1), nn.SiLU(), nn.Conv2d(base, base, 3, padding=1),
                                  nn.SiLU(), nn.AdaptiveAvgPool2d(size), nn.Conv2d(base, base, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(base, 2 * c_latent, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.body(x).chunk(2, dim=1)
        return mean, log_var.clamp(-20.0, 10.0)


class _Decoder(nn.Module):
    def __init__(self, c_latent: int, c_out: int, base: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.inp = nn.Sequential(nn.Conv2d(c_latent, base, 3, padding=1), nn.SiLU())
        self.body = nn.Sequential(nn.Conv2d(base, base, 3, padding=1), nn.SiLU(), nn.Conv2d(base, base, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(base, c_out, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return self.body(F.interpolate(self.inp(z), size=self.size, mode="nearest"))


class LatentDiffusion(nn.Module):
    """An autoencoder with factor f and a flow-matching model in its latent; a Sampler (module docstring).

    Config: :class:`LatentDiffusionConfig` (keyword arguments of the constructor).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        c = LatentDiffusionConfig(**kwargs)
        self.config = c
        lat = c.latent_shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            if c.factor > 1:
                self.encoder: nn.Module | None = _Encoder(c.shape[0], lat[0], c.ae_base, lat[1:])
                self.decoder: nn.Module | None = _Decoder(lat[0], c.shape[0], c.ae_base, c.shape[1:])
            else:
                self.encoder = self.decoder = None
            self.net = ResNet(lat[0], lat[0], width=c.width, blocks=c.blocks, time_dim=c.time_dim)
        # s as the bits of a float64 in an int64 buffer: saved with the weights, and copied (never averaged) by an EMA
        self.register_buffer("latent_scale_bits", torch.tensor(0.0 if c.factor > 1 else 1.0, dtype=torch.float64).view(torch.int64))
        self.data_spec = DataSpec(c.shape, "continuous", c.value_range)
        self.default_steps, self.default_batch_size = c.steps, c.batch_size

    @property
    def ema_decay(self) -> float | None:
        return self.config.ema_decay or None

    @property
    def latent_scale(self) -> float:
        """s, the standard deviation of μ(x) that the latent is divided by (0 until the flow phase starts)."""
        return float(self.latent_scale_bits.view(torch.float64))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        flow = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        if self.encoder is None:
            return [flow]
        ae = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return [torch.optim.Adam(ae, lr=self.config.lr), flow]

    # ----- the autoencoder ------------------------------------------------------------------------

    def autoencoder_loss(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, squared error per pixel, KL per latent dim), each a scalar, for x [B, C, H, W] and ε [B, *latent]."""
        mean, log_var = self.encoder(x)
        z = mean + torch.exp(0.5 * log_var) * eps
        mse = (self.decoder(z) - x).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).mean()
        return mse + self.config.kl_weight * kl, mse, kl

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The flow's data z = μ(x) / s, [B, *latent_shape] (x itself for f = 1)."""
        if self.encoder is None:
            return x
        if not self.latent_scale > 0:
            raise ValueError("the latent scale is set at the first flow step; this model has not reached it")
        return self.encoder(x)[0] / self.latent_scale

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Pixels D(s · z), [B, C, H, W] (z itself for f = 1)."""
        return z if self.decoder is None else self.decoder(z * self.latent_scale)

    # ----- training ---------------------------------------------------------------------------

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """Phase 1: one Adam step of the autoencoder. Phase 2: one Adam step of L_CFM on the scaled latents."""
        c = self.config
        x = batch.to(torch.float32)
        lat = c.latent_shape
        if self.encoder is not None and step < c.ae_steps:
            opt = optimizers[0]
            eps = torch.randn((x.shape[0], *lat), generator=generator).to(x.device)
            loss, mse, kl = self.autoencoder_loss(x, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"ae_loss": float(loss.detach()), "mse": float(mse.detach()), "kl": float(kl.detach()), "phase": 1.0}
        opt = optimizers[-1]
        if c.lr_schedule == "linear":
            linear_decay(opt, c.lr, step, c.ae_steps, c.steps)
        if self.encoder is not None and not self.latent_scale > 0:
            with torch.no_grad():
                scale = torch.tensor(float(self.encoder(x)[0].std()), dtype=torch.float64)
                self.latent_scale_bits.copy_(scale.view(torch.int64))
        z1 = self.encode(x)
        z0 = torch.randn(z1.shape, generator=generator).to(x.device)
        t = torch.rand(z1.shape[0], generator=generator).to(x.device)
        tv = t.reshape(-1, 1, 1, 1)
        loss = (self.net(tv * z1 + (1 - tv) * z0, t) - (z1 - z0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"flow_loss": float(loss.detach()), "phase": 2.0}

    # ----- sampling -----------------------------------------------------------------------------

    def _drift(self, z: Tensor, t: Tensor) -> Tensor:
        return self.net(z, t.to(z.dtype))

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, sampler: str | None = None, steps: int | None = None) -> Tensor:
        """[n, C, H, W] samples: z(0) = ``rng.normal``, the flow's ODE to t = 1 (``sampler``, ``steps``), decoded."""
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        c = self.config
        sampler = sampler or c.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = c.sample_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        param = next(self.parameters())
        z0 = rng.normal(c.latent_shape).to(device=param.device, dtype=param.dtype)
        z1 = ode.fixed_step(self._drift, z0, 0.0, 1.0, method=sampler, steps=steps)
        return self.decode(z1).clamp(*c.value_range)


_TINY = {"factor": 4, "latent_channels": 2, "ae_base": 8, "ae_steps": 2, "width": 8, "blocks": 1, "time_dim": 8,
         "steps": 5, "batch_size": 8, "sample_steps": 2}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("latent-fm", "latent-diffusion", "baselines.latent_diffusion:LatentDiffusion",
               "latent diffusion (Rombach et al. 2022): KL autoencoder with factor f in {1, 2, 4, 7} (1 = pixel "
               "space), then flow matching (OT) in its rescaled latent; samples decoded; NFE = velocity-net calls",
               tiny_config=dict(_TINY)),
)
