"""RealNVP / Glow-style affine coupling flow: exact log-density by change of variables.

Model (Dinh et al. 2017, "Density estimation using Real NVP"; Kingma & Dhariwal 2018, "Glow"):
an invertible network f = f_L ∘ … ∘ f_1 maps data x to z = f(x) with a standard-normal prior, and

    log p(x) = log N(f(x); 0, I) + Σ_l log |det ∂f_l / ∂h_{l-1}|            (Dinh et al. 2017, eq. 3)

Layers (each ``forward(h, reverse=False) -> (h', log|det J| [B])``):

* :class:`AffineCoupling` — with a binary mask b (1 = passed through / conditioning part),
  y = b⊙x + (1−b)⊙(x⊙exp(s(b⊙x)) + t(b⊙x)) (Dinh et al. 2017, eq. 9), log|det J| = Σ (1−b)⊙s
  (eq. 6). The raw log-scale is soft-clamped, s = c·tanh(s_raw / c), so exp(s) ∈ [e^{-c}, e^{c}]
  (the tanh stabilisation is that of Dinh et al. 2017, sec. 4.1, with a scale c). The last layer
  of every conditioner is zero-initialised, so each coupling starts as the identity (Glow, sec. 3.3).
* :class:`ActNorm` — per-feature affine y = (x + b)⊙exp(log_s), data-dependently initialised on
  the first training batch to zero mean and unit variance (Glow, sec. 3.1, Table 1).
* :class:`Squeeze` — (C, H, W) → (4C, H/2, W/2) by 2×2 space-to-depth (Dinh et al. 2017, sec. 3.6);
  ``Squeeze(inverse=True)`` is depth-to-space.
* :class:`FactorOut` — applies an inner flow to channels [k:] only; channels [:k] leave as final
  latents (Dinh et al. 2017, sec. 3.6, eq. 13). log|det J| is the inner flow's.
* :class:`LogitTransform` — images in (0, 1): y = logit(α + (1 − 2α)x), log|det J| =
  Σ [log(1 − 2α) − log p − log(1 − p)] with p = α + (1 − 2α)x (Dinh et al. 2017, sec. 4.1 use
  logit(α + (1 − α)x), α = 0.05; the symmetric form keeps the map's range inside (α, 1 − α)).

Architectures:

* tabular / 2-D data, ``shape=(D,)``: ``num_couplings`` × [ActNorm, AffineCoupling] with
  alternating parity masks b_d = (d + l) mod 2 and conditioners ``baselines.nets.MLP``.
* images, ``shape=(C, H, W)`` with H, W even, values in (0, 1): LogitTransform, Squeeze to
  (4C, H/2, W/2), then ``num_couplings`` × [ActNorm, channel-wise AffineCoupling] whose masks cycle
  through the sub-pixel patterns {(0,0),(0,1)}, {(1,0),(1,1)}, {(0,0),(1,1)}, {(0,1),(1,0)} of the
  squeeze (the last two are RealNVP's checkerboard masks), with conv conditioners
  (:class:`ConvConditioner`, ``conditioner_depth`` hidden 3×3 layers). With ``num_scales`` = 2
  (H/2, W/2 even) this is RealNVP's multi-scale architecture (Dinh et al. 2017, sec. 3.6): after
  the first scale half of the channels are factored out as final latents (:class:`FactorOut`), and
  the other half is squeezed again to (8C, H/4, W/4) and passes ``num_couplings`` more blocks,
  whose conditioners see a neighbourhood twice as wide per layer. The latent keeps the shape
  (4C, H/2, W/2) either way, so the prior is one standard normal. Training dequantizes uniformly
  (Theis et al. 2016, sec. 3.1) with noise from the step's ``generator``; at evaluation the harness
  dequantizes (``metrics.likelihood.model_inputs``) and adds log2(256) = 8 bits/dim for the (0, 1)
  value range (``metrics.bpd``). ``sample(..., temperature=T)`` draws z ~ N(0, T²I) (Kingma &
  Dhariwal 2018, sec. 5); T = 1, the default, samples the model's own density.

``self.net`` is the whole invertible network (:class:`FlowNet`); ``log_prob`` is one forward
call of it and ``sample`` one inverse call, so NFE = 1 per sample.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from baselines.nets import MLP
from harness.core.protocols import DataSpec
from harness.core.entries import ModelEntry
from harness.core.rng import BatchRNG
from metrics.bpd import LN2, dequantize

__all__ = ["ActNorm", "AffineCoupling", "ConvConditioner", "FactorOut", "FlowNet", "LogitTransform", "RealNVP",
           "RealNVPConfig", "Squeeze", "REGISTRY", "maximum_likelihood_step"]

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(x: Tensor) -> Tensor:
    return x.flatten(1).sum(-1)


def std_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over all non-batch dims: z [B, ...] -> [B] nats."""
    flat = z.flatten(1)
    return -0.5 * (flat.pow(2).sum(-1) + flat.shape[1] * _LOG_2PI)


@dataclass(frozen=True)
class RealNVPConfig:
    """Hyper-parameters of :class:`RealNVP` (saved in checkpoints; ``RealNVP(**asdict(cfg))`` rebuilds it).

    Attributes:
        shape: per-example data shape: ``(D,)`` for rows (D >= 2) or ``(C, H, W)`` for images (H, W even).
        num_couplings: number of [ActNorm, AffineCoupling] blocks.
        hidden: conditioner width (MLP hidden units, or conv channels for images).
        depth: MLP hidden layers (rows).
        conditioner_depth: hidden 3×3 conv layers of each image conditioner (1 is the original 3×3, 1×1, 3×3 net).
        num_scales: 1 (single scale) or 2 (multi-scale with one factor-out; images with H/2, W/2 even).
        scale_clamp: c of the soft clamp s = c·tanh(s_raw / c) on each coupling's log-scale.
        actnorm: insert an ActNorm before every coupling.
        logit_alpha: α of the logit pre-processing (images only), in (0, 0.5).
        lr: Adam learning rate.
        grad_clip: max gradient norm (0 disables clipping).
        seed: seeds the parameter initialisation (a forked torch RNG; the global state is untouched).
        batch_size, steps: training defaults (``default_batch_size`` / ``default_steps``).
    """

    shape: tuple[int, ...] = (2,)
    num_couplings: int = 8
    hidden: int = 128
    depth: int = 2
    conditioner_depth: int = 1
    num_scales: int = 1
    scale_clamp: float = 3.0
    actnorm: bool = True
    logit_alpha: float = 0.05
    lr: float = 1e-3
    grad_clip: float = 100.0
    batch_size: int = 256
    steps: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))  # JSON gives lists
        if len(self.shape) == 1:
            if self.shape[0] < 2:
                raise ValueError(f"shape={self.shape}: row data needs D >= 2 for a coupling flow")
        elif len(self.shape) == 3:
            c, h, w = self.shape
            if c < 1 or h < 2 or w < 2 or h % 2 or w % 2:
                raise ValueError(f"shape={self.shape}: images need C >= 1 and even H, W >= 2 (for the 2x2 squeeze)")
        else:
            raise ValueError(f"shape={self.shape}: expected (D,) for rows or (C, H, W) for images")
        if self.num_scales not in (1, 2):
            raise ValueError(f"num_scales must be 1 or 2, got {self.num_scales}")
        if self.num_scales == 2 and (len(self.shape) != 3 or self.shape[1] % 4 or self.shape[2] % 4):
            raise ValueError(f"num_scales=2 needs images with H, W divisible by 4 (two 2x2 squeezes), "
                             f"got shape={self.shape}")
        for name in ("num_couplings", "hidden", "depth", "conditioner_depth", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.scale_clamp > 0:
            raise ValueError(f"scale_clamp must be > 0, got {self.scale_clamp}")
        if not 0.0 < self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {self.logit_alpha}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


class ActNorm(nn.Module):
    """y = (x + bias) ⊙ exp(log_scale) per feature (dim 1); log|det J| = Σ log_scale × (#positions).

    Glow, sec. 3.1. ``initialize(x)`` sets bias = −mean, log_scale = −log std over the batch (and
    spatial positions), so the output of the first batch is standardised.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        self.bias.copy_(-x.mean(dim=dims))
        self.log_scale.copy_(-torch.log(x.std(dim=dims) + 1e-6))

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        positions = x[0, 0].numel()
        logdet = (self.log_scale.sum() * positions).expand(x.shape[0])
        if not reverse:
            return (x + self._view(self.bias, x)) * self._view(self.log_scale, x).exp(), logdet
        return x * self._view(-self.log_scale, x).exp() - self._view(self.bias, x), -logdet


class ConvConditioner(nn.Module):
    """Conv net [B, C, H, W] -> [B, 2C, H, W] (log-scale and shift).

    ``depth`` = 1: 3×3, 1×1, 3×3 (the last zero-initialised by :class:`AffineCoupling`); each extra
    depth adds a 3×3 hidden layer before the 1×1, widening the receptive field by 2 pixels.
    """

    def __init__(self, channels: int, hidden: int, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 2 * channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class AffineCoupling(nn.Module):
    """Affine coupling with mask b (Dinh et al. 2017, eqs. 6, 9), soft-clamped log-scale.

    ``mask`` is broadcastable to one example ([D] for rows, [C, 1, 1] for images); the conditioner
    maps the masked input [B, *shape] to [B, 2·shape[0], ...] = (s_raw, t) stacked on dim 1.
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module, scale_clamp: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32))
        self.conditioner = conditioner
        self.scale_clamp = float(scale_clamp)
        last = [m for m in conditioner.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        nn.init.zeros_(last.weight)  # start at the identity (Glow, sec. 3.3)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        b = self.mask.to(x.dtype)
        x_b = x * b
        s_raw, t = self.conditioner(x_b).chunk(2, dim=1)
        s = self.scale_clamp * torch.tanh(s_raw / self.scale_clamp) * (1 - b)
        t = t * (1 - b)
        if not reverse:
            return x_b + (1 - b) * (x * s.exp() + t), _sum_per_example(s)
        return x_b + (1 - b) * ((x - t) * (-s).exp()), -_sum_per_example(s)


class Squeeze(nn.Module):
    """Space-to-depth (C, H, W) -> (4C, H/2, W/2); channel c·4 + 2i + j holds sub-pixel (i, j). Volume-preserving.

    ``inverse=True`` swaps the directions (depth-to-space forward), to return to a coarser layout.
    """

    def __init__(self, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        zero = x.new_zeros(x.shape[0])
        to_depth = reverse == self.inverse
        return (nn.functional.pixel_unshuffle(x, 2) if to_depth else nn.functional.pixel_shuffle(x, 2)), zero


class FactorOut(nn.Module):
    """Channels [:keep_out] pass unchanged (final latents); ``inner`` transforms channels [keep_out:].

    Dinh et al. 2017, sec. 3.6: z_i = h_i[:half] is factored out and only h_i[half:] goes through
    the next scale. The Jacobian is block-diagonal (identity, inner), so log|det J| is the inner one.
    """

    def __init__(self, keep_out: int, inner: "FlowNet") -> None:
        super().__init__()
        self.keep_out = int(keep_out)
        self.inner = inner

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        z, h = x[:, :self.keep_out], x[:, self.keep_out:]
        h, logdet = self.inner(h, reverse=reverse)
        return torch.cat([z, h], dim=1), logdet

    @torch.no_grad()
    def data_init(self, x: Tensor) -> None:
        self.inner.data_init(x[:, self.keep_out:])


class LogitTransform(nn.Module):
    """y = logit(α + (1 − 2α)x) for x in (0, 1) (Dinh et al. 2017, sec. 4.1, symmetric variant).

    log|det J| = Σ_d [log(1 − 2α) − log p_d − log(1 − p_d)], p = α + (1 − 2α)x.
    """

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        a = self.alpha
        if not reverse:
            p = a + (1 - 2 * a) * x
            y = torch.log(p) - torch.log1p(-p)
            return y, _sum_per_example(math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p))
        p = torch.sigmoid(x)
        logdet = _sum_per_example(math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p))
        return (p - a) / (1 - 2 * a), -logdet


class FlowNet(nn.Module):
    """The invertible network: ``net(x) -> (z, log|det ∂z/∂x| [B])``; ``net(z, reverse=True) -> (x, log|det ∂x/∂z|)``."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in (reversed(self.layers) if reverse else self.layers):
            x, ld = layer(x, reverse=reverse)
            logdet = logdet + ld
        return x, logdet

    @torch.no_grad()
    def data_init(self, x: Tensor) -> None:
        """Data-dependent ActNorm initialisation (Glow, sec. 3.1): one forward pass initialising each ActNorm in turn."""
        for layer in self.layers:
            if isinstance(layer, ActNorm):
                layer.initialize(x)
            elif hasattr(layer, "data_init"):
                layer.data_init(x)
            x, _ = layer(x)


_CHANNEL_PATTERNS = ((1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0))  # sub-pixels (i, j) at 2i + j


def _image_blocks(cfg: RealNVPConfig, channels: int) -> list[nn.Module]:
    """``num_couplings`` × [ActNorm, AffineCoupling] on a squeezed tensor of ``channels`` = 4·c' channels."""
    blocks: list[nn.Module] = []
    for k in range(cfg.num_couplings):
        if cfg.actnorm:
            blocks.append(ActNorm(channels))
        pattern = torch.tensor(_CHANNEL_PATTERNS[k % 4], dtype=torch.float32).repeat(channels // 4)
        blocks.append(AffineCoupling(pattern.view(channels, 1, 1),
                                     ConvConditioner(channels, cfg.hidden, cfg.conditioner_depth), cfg.scale_clamp))
    return blocks


def build_flow_net(cfg: RealNVPConfig) -> FlowNet:
    """The layer stack of :class:`RealNVP` for ``cfg.shape`` (see the module docstring)."""
    layers: list[nn.Module] = []
    if len(cfg.shape) == 1:
        d = cfg.shape[0]
        for k in range(cfg.num_couplings):
            if cfg.actnorm:
                layers.append(ActNorm(d))
            mask = (torch.arange(d) + k) % 2 == 0
            layers.append(AffineCoupling(mask, MLP(d, 2 * d, hidden=cfg.hidden, depth=cfg.depth), cfg.scale_clamp))
    else:
        c = cfg.shape[0]
        layers += [LogitTransform(cfg.logit_alpha), Squeeze(), *_image_blocks(cfg, 4 * c)]
        if cfg.num_scales == 2:
            inner = [Squeeze(), *_image_blocks(cfg, 8 * c), Squeeze(inverse=True)]
            layers.append(FactorOut(2 * c, FlowNet(inner)))
    return FlowNet(layers)


class RealNVP(nn.Module):
    """Affine coupling flow with exact likelihood (Sampler, LogLikelihood; trainable).

    ``RealNVP(**overrides)`` builds from :class:`RealNVPConfig` fields (unknown keys are rejected).
    Rows: ``data_spec`` continuous, any value range (2-D toys are used as stored). Images:
    continuous with ``value_range=(0, 1)``.
    """

    def __init__(self, **overrides: object) -> None:
        super().__init__()
        self.config = RealNVPConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.is_image = len(cfg.shape) == 3
        self.data_spec = DataSpec(cfg.shape, "continuous", (0.0, 1.0) if self.is_image else (-1.0, 1.0))
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is restored
            torch.manual_seed(cfg.seed)
            self.net = build_flow_net(cfg)
        self.latent_shape = (4 * cfg.shape[0], cfg.shape[1] // 2, cfg.shape[2] // 2) if self.is_image else cfg.shape
        self.register_buffer("initialized", torch.zeros(()))  # 1 once ActNorm has seen data
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = None

    def forward_z(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, *shape] -> (z [B, *latent_shape], log|det ∂z/∂x| [B])."""
        return self.net(x.to(self.initialized.dtype))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) [B] nats = log N(f(x); 0, I) + log|det ∂f/∂x| (Dinh et al. 2017, eq. 3).

        x: [B, *shape] in model space (images: dequantized values in [0, 1)).
        """
        z, logdet = self.forward_z(x)
        return std_normal_log_prob(z) + logdet

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, temperature: float = 1.0) -> Tensor:
        """[n, *shape] samples x = f⁻¹(z), z ~ N(0, T²I) drawn per example from ``rng``; one inverse call of ``self.net``.

        ``temperature`` T < 1 trades diversity for fidelity (Kingma & Dhariwal 2018, sec. 5); T = 1
        samples the density that ``log_prob`` scores. Image samples are clamped to the data range [0, 1].
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        z = float(temperature) * rng.normal(self.latent_shape).to(device=self.initialized.device, dtype=self.initialized.dtype)
        x, _ = self.net(z, reverse=True)
        # images: the inverse logit reaches (−α/(1−2α), (1−α)/(1−2α)) ⊃ [0, 1]; the data live in [0, 1]
        return x.clamp(0.0, 1.0) if self.is_image else x

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One maximum-likelihood step (:func:`maximum_likelihood_step`); ActNorm initialised on the first batch."""
        return maximum_likelihood_step(self, batch, optimizers=optimizers, generator=generator, data_init=self.net.data_init)


def maximum_likelihood_step(model: nn.Module, batch: Tensor, *, optimizers: list[torch.optim.Optimizer],
                            generator: torch.Generator, data_init: Callable[[Tensor], None]) -> dict[str, float]:
    """One step minimising −E log p(x) (nats per dim) of a flow with ``log_prob``, ``is_image``, ``data_spec``,
    ``config.grad_clip`` and an ``initialized`` buffer; ``data_init(x)`` runs once, on the first batch.

    Images: the batch holds 8-bit values v/255 in [0, 1]; they are re-quantized to v and uniformly
    dequantized, y = (v + u)/256 with u ~ U[0, 1) from ``generator`` (Theis et al. 2016, sec. 3.1),
    so that −log p(y)/D/ln2 + 8 is the bits/dim the harness reports.
    """
    x = batch
    if model.is_image:
        pixels = torch.round(x.clamp(0.0, 1.0) * 255.0)
        noise = torch.rand(x.shape, generator=generator).to(x.device)
        x = dequantize(pixels, noise, (0.0, 1.0))
    if not bool(model.initialized):
        data_init(x)
        model.initialized.fill_(1.0)
    (opt,) = optimizers
    opt.zero_grad(set_to_none=True)
    nll_per_dim = -model.log_prob(x).mean() / model.data_spec.num_dims
    nll_per_dim.backward()
    if model.config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), model.config.grad_clip)
    opt.step()
    out = {"nll_per_dim": nll_per_dim.item()}
    if model.is_image:
        out["bpd"] = out["nll_per_dim"] / LN2 + 8.0
    return out


RealNVP.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(RealNVPConfig)])


REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("realnvp", "flow", "baselines.realnvp:RealNVP",
               "RealNVP/Glow affine coupling flow (ActNorm, soft-clamped scales): exact log p(x); "
               "rows (MLP couplings) or images with shape=[C,H,W] (logit, squeeze, conv couplings; "
               "num_scales=2: multi-scale with factor-out); NFE 1",
               tiny_config={"num_couplings": 2, "hidden": 16, "depth": 1, "steps": 20, "batch_size": 64}),
)

