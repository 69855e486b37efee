"""Autoregressive flows: MAF (fast density, sequential sampling) and IAF (fast sampling, sequential density).

Both stack L affine autoregressive layers whose shift μ and log-scale α come from a MADE
(Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation", sec. 4): an MLP whose
weight masks make output i depend only on inputs < i (in the layer's order), so one forward call
gives every conditional at once. Per layer, with u the noise side and x the data side:

* **MAF** (Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation", eqs. 2-3):
  x_i = u_i·exp(α_i) + μ_i with (μ_i, α_i) = f_i(x_{<i}). Density: u = (x − μ(x))·exp(−α(x)), one
  MADE call, log|det ∂u/∂x| = −Σ_i α_i(x) (eq. 5). Sampling: D calls, coordinate by coordinate.
* **IAF** (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive Flow",
  eqs. 9-10; the inverse of MAF, Papamakarios et al. 2017, sec. 3.2): x_i = u_i·exp(α_i) + μ_i with
  (μ_i, α_i) = f_i(u_{<i}). Sampling: one MADE call, log|det ∂x/∂u| = Σ_i α_i(u). Density: D calls,
  solving for u_1, u_2, … in turn.

So per sample (or per scored example) the flow makes L MADE calls in its fast direction and L·D in
its slow one; ``model.net`` (:class:`MADEStack`) is called once per MADE evaluation, so the
harness's NFE counts them. The log-scale is soft-clamped, α = c·tanh(α_raw / c); each MADE's last
layer is zero-initialised, so every layer starts as the identity. Layer k reads the features in
natural order for even k and reversed for odd k (Papamakarios et al. 2017, sec. 3.1: the order is
changed between layers). An :class:`~baselines.realnvp.ActNorm` precedes each layer in the density
direction (data-dependently initialised on the first batch; MAF uses batch norm there, sec. 3.4).

Rows, ``shape=(D,)``: the flow acts on the values as stored. Images, ``shape=(C, H, W)`` with
values in (0, 1): the logit transform of :class:`~baselines.realnvp.LogitTransform` (Papamakarios
et al. 2017, sec. 4.3 model MNIST in logit space), then the flow on the C·H·W flattened values;
training dequantizes uniformly like :class:`~baselines.realnvp.RealNVP`, and the harness adds the
8 bits/dim of the (0, 1) range.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor, nn

from baselines.realnvp import ActNorm, LogitTransform, maximum_likelihood_step, std_normal_log_prob
from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["MADE", "MADEStack", "AutoregressiveFlow", "AutoregressiveFlowConfig", "MAF", "IAF", "REGISTRY"]


@dataclass(frozen=True)
class AutoregressiveFlowConfig:
    """Hyper-parameters of :class:`AutoregressiveFlow` (saved in checkpoints).

    Attributes:
        direction: ``"maf"`` (MADE reads the data side: one call per layer to score, D to sample)
            or ``"iaf"`` (MADE reads the noise side: one call per layer to sample, D to score).
        shape: per-example shape: ``(D,)`` rows (D >= 2) or ``(C, H, W)`` images in (0, 1).
        num_layers: L autoregressive layers.
        hidden: MADE hidden units per layer (>= D − 1, so that every conditional sees all its inputs).
        depth: MADE hidden layers.
        scale_clamp: c of the soft clamp on each log-scale.
        actnorm: an ActNorm before each layer (density direction).
        logit_alpha: α of the images' logit transform, in (0, 0.5).
        lr, grad_clip, batch_size, steps: training (Adam; 0 disables clipping).
        seed: seeds the parameter initialisation (a forked torch RNG).
    """

    direction: Literal["maf", "iaf"] = "maf"
    shape: tuple[int, ...] = (2,)
    num_layers: int = 5
    hidden: int = 64
    depth: int = 2
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
        if self.direction not in ("maf", "iaf"):
            raise ValueError(f"direction must be 'maf' or 'iaf', got {self.direction!r}")
        if len(self.shape) not in (1, 3) or any(s < 1 for s in self.shape):
            raise ValueError(f"shape={self.shape}: expected (D,) for rows or (C, H, W) for images")
        dim = int(torch.Size(self.shape).numel())
        if dim < 2:
            raise ValueError(f"shape={self.shape}: an autoregressive flow needs at least 2 values per example")
        for name in ("num_layers", "depth", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden < dim - 1:
            raise ValueError(f"hidden={self.hidden} < D - 1 = {dim - 1}: some MADE conditionals would miss "
                             f"inputs; use hidden >= {dim - 1}")
        if not self.scale_clamp > 0:
            raise ValueError(f"scale_clamp must be > 0, got {self.scale_clamp}")
        if not 0.0 < self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {self.logit_alpha}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask.to(self.weight.dtype), self.bias)


class MADE(nn.Module):
    """Masked MLP [B, D] -> (μ [B, D], α_raw [B, D]) with output i a function of inputs 0..i−1 only.

    Degrees (Germain et al. 2015, sec. 4): input d has degree d + 1, hidden unit k of every layer
    degree (k mod (D − 1)) + 1, and output i degree i + 1; a weight is kept from degree a to b when
    b >= a (into a hidden unit) or b > a (into an output), so output 0 is a constant (its bias).
    """

    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        d_in = torch.arange(1, dim + 1)
        d_hidden = torch.arange(hidden) % (dim - 1) + 1
        layers: list[nn.Module] = []
        previous = d_in
        for _ in range(depth):
            layers += [_MaskedLinear((d_hidden[:, None] >= previous[None, :])), nn.ReLU()]
            previous = d_hidden
        out = torch.cat([d_in, d_in])  # μ and α of coordinate i share its degree
        layers.append(_MaskedLinear(out[:, None] > previous[None, :]))
        nn.init.zeros_(layers[-1].weight)  # the layer starts as the identity
        nn.init.zeros_(layers[-1].bias)
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.body(x).chunk(2, dim=-1)


class MADEStack(nn.Module):
    """The flow's conditioners: ``net(h, k)`` is one call of layer k's MADE on h [B, D] in natural
    order, returning (μ, α) [B, D] with α soft-clamped to (−c, c)."""

    def __init__(self, dim: int, cfg: AutoregressiveFlowConfig) -> None:
        super().__init__()
        self.mades = nn.ModuleList(MADE(dim, cfg.hidden, cfg.depth) for _ in range(cfg.num_layers))
        self.scale_clamp = float(cfg.scale_clamp)

    def forward(self, h: Tensor, k: int) -> tuple[Tensor, Tensor]:
        mu, alpha_raw = self.mades[k](h)
        return mu, self.scale_clamp * torch.tanh(alpha_raw / self.scale_clamp)


class AutoregressiveFlow(nn.Module):
    """MAF or IAF (``direction``) with exact log-density (Sampler, LogLikelihood; trainable).

    ``AutoregressiveFlow(**overrides)`` builds from :class:`AutoregressiveFlowConfig` (unknown keys are
    rejected). ``normalize(x)`` maps data to noise and ``generate(u)`` noise to data, each returning
    the log|det| of its own direction [B] in nats.
    """

    def __init__(self, **overrides: object) -> None:
        super().__init__()
        self.config = AutoregressiveFlowConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.is_image = len(cfg.shape) == 3
        self.dim = int(torch.Size(cfg.shape).numel())
        self.data_spec = DataSpec(cfg.shape, "continuous", (0.0, 1.0) if self.is_image else (-1.0, 1.0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = MADEStack(self.dim, cfg)
            self.norms = nn.ModuleList(ActNorm(self.dim) for _ in range(cfg.num_layers)) if cfg.actnorm else None
        self.logit = LogitTransform(cfg.logit_alpha) if self.is_image else None
        self.register_buffer("initialized", torch.zeros(()))  # 1 once ActNorm has seen data
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = None

    # ---------------------------------------------------------------- one layer, natural order

    def _layer_normalize(self, h: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Layer k from the data side h to the noise side u [B, D]; log|det ∂u/∂h| [B]."""
        if self.config.direction == "maf":
            mu, alpha = self.net(h, k)
            return (h - mu) * torch.exp(-alpha), -alpha.sum(-1)
        u = torch.zeros_like(h)
        for i in range(self.dim):  # u_i needs u_{<i}: one MADE call per coordinate
            mu, alpha = self.net(u, k)
            u = u.clone()
            u[:, i] = (h[:, i] - mu[:, i]) * torch.exp(-alpha[:, i])
        return u, -alpha.sum(-1)  # the last call saw all of u_{<D}: every α_i is final

    def _layer_generate(self, u: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Layer k from the noise side u to the data side h [B, D]; log|det ∂h/∂u| [B]."""
        if self.config.direction == "iaf":
            mu, alpha = self.net(u, k)
            return u * torch.exp(alpha) + mu, alpha.sum(-1)
        h = torch.zeros_like(u)
        for i in range(self.dim):  # h_i needs h_{<i}
            mu, alpha = self.net(h, k)
            h = h.clone()
            h[:, i] = u[:, i] * torch.exp(alpha[:, i]) + mu[:, i]
        return h, alpha.sum(-1)

    # ---------------------------------------------------------------- the whole flow

    def normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, *shape] (model space) -> (u [B, D], log|det ∂u/∂x| [B] nats)."""
        x = x.to(self.initialized.dtype)
        logdet = x.new_zeros(x.shape[0])
        if self.logit is not None:
            x, ld = self.logit(x)
            logdet = logdet + ld
        h = x.flatten(1)
        for k in range(self.config.num_layers):
            if self.norms is not None:
                h, ld = self.norms[k](h)
                logdet = logdet + ld
            h = h.flip(-1) if k % 2 else h
            h, ld = self._layer_normalize(h, k)
            h = h.flip(-1) if k % 2 else h
            logdet = logdet + ld
        return h, logdet

    def generate(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """u [B, D] -> (x [B, *shape] model space, log|det ∂x/∂u| [B] nats); the inverse of :meth:`normalize`."""
        h = u.to(self.initialized.dtype)
        logdet = h.new_zeros(h.shape[0])
        for k in reversed(range(self.config.num_layers)):
            h = h.flip(-1) if k % 2 else h
            h, ld = self._layer_generate(h, k)
            h = h.flip(-1) if k % 2 else h
            logdet = logdet + ld
            if self.norms is not None:
                h, ld = self.norms[k](h, reverse=True)
                logdet = logdet + ld
        x = h.view(h.shape[0], *self.config.shape)
        if self.logit is not None:
            x, ld = self.logit(x, reverse=True)
            logdet = logdet + ld
        return x, logdet

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) [B] nats = log N(u; 0, I) + log|det ∂u/∂x| (Papamakarios et al. 2017, eq. 5).

        x: [B, *shape] in model space (images: dequantized values in (0, 1)).
        """
        u, logdet = self.normalize(x)
        return std_normal_log_prob(u) + logdet

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, *shape] samples x = generate(u), u ~ N(0, I) drawn per example from ``rng``.

        Image samples are clamped to the data range [0, 1] (the inverse logit reaches slightly beyond).
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        u = rng.normal((self.dim,)).to(device=self.initialized.device, dtype=self.initialized.dtype)
        x, _ = self.generate(u)
        return x.clamp(0.0, 1.0) if self.is_image else x

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    @torch.no_grad()
    def _data_init(self, x: Tensor) -> None:
        """Each ActNorm standardises its input on the first batch (Glow, sec. 3.1)."""
        if self.norms is None:
            return
        h = self.logit(x)[0] if self.logit is not None else x
        h = h.flatten(1)
        for k in range(self.config.num_layers):
            self.norms[k].initialize(h)
            h, _ = self.norms[k](h)
            h = h.flip(-1) if k % 2 else h
            h, _ = self._layer_normalize(h, k)
            h = h.flip(-1) if k % 2 else h

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One maximum-likelihood step (:func:`baselines.realnvp.maximum_likelihood_step`: images dequantized
        with noise from ``generator``); an IAF's costs D MADE calls per layer."""
        return maximum_likelihood_step(self, batch, optimizers=optimizers, generator=generator,
                                       data_init=lambda x: self._data_init(x.to(self.initialized.dtype)))


AutoregressiveFlow.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(AutoregressiveFlowConfig)])


def MAF(**overrides: object) -> AutoregressiveFlow:
    """:class:`AutoregressiveFlow` with ``direction="maf"`` (the registry's ``maf``)."""
    return AutoregressiveFlow(**pinned("maf", "direction", "maf", overrides, {"iaf": "iaf"}))


def IAF(**overrides: object) -> AutoregressiveFlow:
    """:class:`AutoregressiveFlow` with ``direction="iaf"`` (the registry's ``iaf``)."""
    return AutoregressiveFlow(**pinned("iaf", "direction", "iaf", overrides, {"maf": "maf"}))


_TINY = {"num_layers": 2, "hidden": 16, "depth": 1, "steps": 20, "batch_size": 64}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("maf", "flow", "baselines.autoregressive_flow:MAF",
               "Masked autoregressive flow (MADE conditioners, ActNorm, order reversed between layers): "
               "exact log p(x) in L network calls, sampling in L*D; rows, or images with shape=[C,H,W] "
               "(logit space)", tiny_config=_TINY),
    ModelEntry("iaf", "flow", "baselines.autoregressive_flow:IAF",
               "Inverse autoregressive flow (MAF's inverse): sampling in L network calls, exact log p(x) "
               "in L*D; rows, or images with shape=[C,H,W] (logit space)", tiny_config=_TINY),
)
