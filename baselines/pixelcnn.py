"""PixelCNN: an autoregressive model of discrete pixels with masked convolutions.

Model (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", sec. 2 and 3.5): for an image
x of D = C·H·W discrete values in raster order (C = 1 here),

    p(x) = Π_{i=1}^{D} p(x_i | x_1, …, x_{i−1})                               (eq. 1)

with every conditional a softmax over the K levels (sec. 2.2: a 256-way softmax; K = 2 for
binarized images, where the paper uses a sigmoid — the same model). The conditionals are computed
in one pass by a stack of masked convolutions (sec. 3.5, Figure 4): the first layer uses mask A
(a pixel sees only the pixels strictly before it: rows above, and to its left in its own row),
later layers use mask B (also their own position), so output position i depends on inputs j < i
only. The network is a 7×7 mask-A convolution, ``num_layers`` residual blocks
(ReLU → 1×1 → ReLU → 3×3 mask B → ReLU → 1×1, + skip; sec. 3.4 and Figure 5), then
ReLU → 1×1 → ReLU → 1×1 to K logits per pixel. (Like the original PixelCNN it has the
"blind spot" that gated PixelCNN later removed; the model is still exactly causal.)

``gated=True`` builds the gated PixelCNN instead (van den Oord et al. 2016b, "Conditional Image
Generation with PixelCNN Decoders", sec. 2.1–2.2, Figure 2), which has no blind spot: a vertical
stack of k×k convolutions masked to the rows above (the first layer strictly above, later layers
also the current row of the stack's own features, which only depend on rows above), and a
horizontal stack of 1×k convolutions masked to the left (mask A first, then B) that adds a 1×1
projection of the vertical features at every layer; both stacks use the gated unit
y = tanh(W_f ∗ x) ⊙ σ(W_g ∗ x) (eq. 2), and the horizontal stack is residual. The output head
reads the horizontal stack.

Input: the levels are fed as one channel scaled to [−1, 1], 2·x/(K − 1) − 1.

* ``log_prob(x int64 [B, 1, H, W]) -> [B]`` nats: Σ_i log softmax(logits_i)[x_i], exact.
* ``sample(n, rng)``: pixel by pixel in raster order, one call of ``self.net`` per pixel
  (NFE = H·W per sample; the call for a pixel in row i sees rows 0..i only, which is exact
  because no mask looks below its row); the draw of pixel i is the inverse CDF of its softmax at
  u_i ~ U[0, 1) from ``rng`` (H·W uniforms per example, drawn at once), so sample k does not
  depend on the batch it is drawn in.

Training maximises the exact log-likelihood (cross-entropy, nats per dim); the harness gives
integer levels (``data_to_model``: binarized at 128 for K = 2, the raw byte for K = 256).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from harness.core.protocols import DataSpec
from harness.core.entries import ModelEntry
from harness.core.rng import BatchRNG

__all__ = ["MaskedConv2d", "PixelCNN", "PixelCNNConfig", "PixelCNNNet", "pixelcnn_256", "pixelcnn_binary", "REGISTRY"]


@dataclass(frozen=True)
class PixelCNNConfig:
    """Hyper-parameters of :class:`PixelCNN` (saved in checkpoints).

    Attributes:
        shape: (1, H, W) per-example shape (one channel; H, W >= 2).
        num_categories: K, 2 (binarized) or 256 (8-bit levels).
        channels: feature channels h of the residual stream (the blocks' inner width is h/2).
        num_layers: residual blocks after the mask-A input layer.
        first_kernel: kernel size of the mask-A layer (odd; 7 in the paper).
        gated: the gated PixelCNN (vertical and horizontal stacks, no blind spot) instead of the original.
        lr: Adam learning rate. grad_clip: max gradient norm (0 disables).
        seed: seeds the parameter initialisation (a forked torch RNG; the global state is untouched).
        batch_size, steps: training defaults.
    """

    shape: tuple[int, ...] = (1, 28, 28)
    num_categories: int = 256
    channels: int = 64
    num_layers: int = 5
    first_kernel: int = 7
    gated: bool = False
    lr: float = 1e-3
    grad_clip: float = 1.0
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))  # JSON gives lists
        if len(self.shape) != 3 or self.shape[0] != 1 or self.shape[1] < 2 or self.shape[2] < 2:
            raise ValueError(f"shape={self.shape}: PixelCNN here models one-channel images (1, H, W) with H, W >= 2")
        if self.num_categories not in (2, 256):
            raise ValueError(f"num_categories={self.num_categories}: allowed values are 2 (binarized) and 256 (8-bit)")
        if self.channels < 2 or self.channels % 2:
            raise ValueError(f"channels must be an even number >= 2, got {self.channels}")
        for name in ("num_layers", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_kernel < 3 or self.first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be odd and >= 3, got {self.first_kernel}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded kh×kw convolution whose kernel is masked to the raster-order past.

    Mask A (``mask_type="A"``) keeps the rows above the center and the positions left of it;
    mask B also keeps the center (van den Oord et al. 2016, sec. 3.5, Figure 2 right / Figure 4).
    With a 1×k kernel these are the horizontal-stack masks of the gated PixelCNN. ``"above"``
    keeps the rows strictly above the center and ``"above_and_row"`` also the center row: the
    vertical-stack masks (van den Oord et al. 2016b, sec. 2.2). One image channel, so no masking
    between colour channels is needed.
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int]) -> None:
        if mask_type not in ("A", "B", "above", "above_and_row"):
            raise ValueError(f"mask_type must be 'A', 'B', 'above' or 'above_and_row', got {mask_type!r}")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        mask = torch.zeros(kh, kw)
        mask[: kh // 2] = 1
        if mask_type == "above_and_row":
            mask[kh // 2] = 1
        elif mask_type in ("A", "B"):
            mask[kh // 2, : kw // 2 + (mask_type == "B")] = 1
        self.register_buffer("mask", mask.view(1, 1, kh, kw))

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def _gate(x: Tensor) -> Tensor:
    """tanh(a) ⊙ σ(b) for x = [a, b] stacked on dim 1 (van den Oord et al. 2016b, eq. 2)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class _GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016b, Figure 2); ``first`` takes the image for both."""

    def __init__(self, c_in: int, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.vertical = MaskedConv2d("above" if first else "above_and_row", c_in, 2 * channels, kernel)
        self.horizontal = MaskedConv2d("A" if first else "B", c_in, 2 * channels, (1, kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        v_pre = self.vertical(v)  # position (i, j) depends on image rows < i only
        h_new = self.h_out(_gate(self.horizontal(h) + self.v_to_h(v_pre)))
        return _gate(v_pre), (h_new if self.first else h + h_new)


class _GatedStack(nn.Module):
    def __init__(self, cfg: "PixelCNNConfig", in_channels: int = 1) -> None:
        super().__init__()
        h = cfg.channels
        self.layers = nn.ModuleList([_GatedLayer(in_channels, h, cfg.first_kernel, True)]
                                    + [_GatedLayer(h, h, 3, False) for _ in range(cfg.num_layers)])

    def forward(self, x: Tensor) -> Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return h


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, half, 1),
            nn.ReLU(), MaskedConv2d("B", half, half, 3),
            nn.ReLU(), nn.Conv2d(half, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PixelCNNNet(nn.Module):
    """Masked conv network: levels-as-floats [B, 1, H, W] -> logits [B, K, H, W]; output i sees inputs j < i.

    The original residual stack, or with ``cfg.gated`` the gated vertical/horizontal stacks.
    ``in_channels`` / ``num_outputs`` (default 1 / ``cfg.num_categories``) let another model reuse the
    network on other inputs, e.g. :mod:`baselines.vqvae`'s prior over one-hot code grids
    [B, K, h, w] -> [B, K, h, w] (there ``cfg.num_categories`` is unused). All channels of a
    position are masked alike, so output i still sees positions j < i only.
    """

    def __init__(self, cfg: PixelCNNConfig, *, in_channels: int = 1, num_outputs: int | None = None) -> None:
        super().__init__()
        h = cfg.channels
        stack = ([_GatedStack(cfg, in_channels)] if cfg.gated else
                 [MaskedConv2d("A", in_channels, h, cfg.first_kernel),
                  *[_ResidualBlock(h) for _ in range(cfg.num_layers)]])
        self.body = nn.Sequential(
            *stack, nn.ReLU(), nn.Conv2d(h, h, 1), nn.ReLU(), nn.Conv2d(h, num_outputs or cfg.num_categories, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class PixelCNN(nn.Module):
    """PixelCNN over K discrete levels (Sampler, LogLikelihood; trainable). ``self.net``: :class:`PixelCNNNet`.

    ``PixelCNN(**overrides)`` builds from :class:`PixelCNNConfig` fields (unknown keys rejected).
    """

    def __init__(self, **overrides: object) -> None:
        super().__init__()
        self.config = PixelCNNConfig(**overrides)  # type: ignore[arg-type]
        cfg = self.config
        self.data_spec = DataSpec(cfg.shape, "discrete", (0.0, 1.0), num_categories=cfg.num_categories)
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is restored
            torch.manual_seed(cfg.seed)
            self.net = PixelCNNNet(cfg)
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = None

    def _inputs(self, x: Tensor) -> Tensor:
        """Integer levels -> the network's input channel in [−1, 1]."""
        dtype = next(self.net.parameters()).dtype
        return x.to(dtype) * (2.0 / (self.config.num_categories - 1)) - 1.0

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(f"expected x [B, {', '.join(map(str, self.config.shape))}], got {tuple(x.shape)}")
        if x.is_floating_point():
            raise ValueError(f"PixelCNN takes integer levels 0..{self.config.num_categories - 1}, got {x.dtype}")

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) [B] nats = Σ_i log p(x_i | x_<i) (eq. 1); x int64 [B, 1, H, W] in 0..K−1."""
        self._check(x)
        logits = self.net(self._inputs(x))  # [B, K, H, W]
        logp = torch.log_softmax(logits, dim=1)
        return logp.gather(1, x.long()).flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """int64 [n, 1, H, W] by ancestral sampling in raster order: H·W calls of ``self.net``.

        Pixel i of example k is the inverse CDF of softmax(logits_i) at u_{k,i} ~ U[0, 1) from ``rng``.
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        _, h, w = self.config.shape
        device = next(self.net.parameters()).device
        u = rng.uniform((h * w,), dtype=torch.float64).to(device)  # [n, H·W]
        x = torch.zeros(n, 1, h, w, dtype=torch.int64, device=device)
        for i in range(h):
            for j in range(w):
                # rows > i cannot influence row i (every mask excludes the rows below), so the net
                # sees rows 0..i only: the same logits at about half the cost
                logits = self.net(self._inputs(x[:, :, : i + 1]))[:, :, i, j]  # [n, K]
                cdf = torch.softmax(logits.to(torch.float64), dim=1).cumsum(1)
                level = (cdf < u[:, i * w + j, None]).sum(1).clamp_(max=self.config.num_categories - 1)
                x[:, 0, i, j] = level
        return x

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One maximum-likelihood step on integer levels [B, 1, H, W]: minimise −E log p(x) / D (nats per dim).

        Deterministic given the batch (no noise is drawn). Returns the loss and the batch's bits/dim.
        """
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        nll_per_dim = -self.log_prob(batch).mean() / self.data_spec.num_dims
        nll_per_dim.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        opt.step()
        value = nll_per_dim.item()
        return {"nll_per_dim": value, "bpd": value / math.log(2.0)}


PixelCNN.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(PixelCNNConfig)])


def _fixed_levels(levels: int, name: str, overrides: dict[str, object]) -> PixelCNN:
    given = overrides.get("num_categories", levels)
    if given != levels:
        raise ValueError(f"{name} has num_categories={levels}, got {given}; use "
                         f"{'pixelcnn-256' if levels == 2 else 'pixelcnn-binary'} for {given} levels")
    return PixelCNN(**{**overrides, "num_categories": levels})


def pixelcnn_binary(**overrides: object) -> PixelCNN:
    """``pixelcnn-binary``: PixelCNN over binarized pixels (K = 2; data binarized at 128)."""
    return _fixed_levels(2, "pixelcnn-binary", overrides)


def pixelcnn_256(**overrides: object) -> PixelCNN:
    """``pixelcnn-256``: PixelCNN with a 256-way softmax per pixel (van den Oord et al. 2016, sec. 2.2)."""
    return _fixed_levels(256, "pixelcnn-256", overrides)


pixelcnn_binary.__signature__ = PixelCNN.__signature__  # type: ignore[attr-defined]
pixelcnn_256.__signature__ = PixelCNN.__signature__  # type: ignore[attr-defined]

_TINY = {"shape": [1, 8, 8], "channels": 8, "num_layers": 1, "first_kernel": 3, "steps": 5, "batch_size": 32}


REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("pixelcnn-binary", "autoregressive", "baselines.pixelcnn:pixelcnn_binary",
               "PixelCNN (mask A/B residual masked convs; gated=true: gated stacks, no blind spot) over "
               "binarized pixels: exact log p(x); NFE = H*W",
               tiny_config=dict(_TINY)),
    ModelEntry("pixelcnn-256", "autoregressive", "baselines.pixelcnn:pixelcnn_256",
               "PixelCNN with a 256-way softmax per pixel: exact log p(x); NFE = H*W",
               tiny_config=dict(_TINY)),
)

