"""Shared small networks: an MLP for 2-D / tabular data and a small U-Net for 28x28 images.

Both optionally take a time input t in [0, 1] (shape [B]) through a sinusoidal embedding
(Vaswani et al. 2017, sec. 3.5; as used by Ho et al. 2020), so the same module serves as a
score / noise / velocity network for diffusion, score-SDE and flow-matching models, or as a plain
encoder, decoder, generator or critic when ``time_dim=0``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def check_field_shape(shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``shape`` is (D,) (an ``MLP``) or (C, H, W) with H, W divisible by 4 (the ``SmallUNet``)."""
    if len(shape) not in (1, 3) or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (D,) or (C, H, W) with positive sizes, got {shape}")
    if len(shape) == 3 and (shape[1] % 4 or shape[2] % 4):
        raise ValueError(f"image shape {shape}: H and W must be divisible by 4 (SmallUNet)")


def field_net(shape: tuple[int, ...], *, hidden: int, depth: int, base: int, time_dim: int, seed: int,
              num_classes: int = 0) -> nn.Module:
    """The time-conditioned network of a field on ``shape`` (a velocity, a consistency function), its
    weights drawn from ``seed`` with the caller's global RNG state restored: an ``MLP`` of ``depth`` x
    ``hidden`` for (D,) rows, a ``SmallUNet`` of ``base`` channels for (C, H, W) images; ``num_classes``
    > 0 adds a label input (with a null label)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if len(shape) == 1:
            return MLP(shape[0], shape[0], hidden=hidden, depth=depth, time_dim=time_dim, num_classes=num_classes)
        return SmallUNet(shape[0], shape[0], base=base, time_dim=time_dim, num_classes=num_classes)


def timestep_embedding(t: Tensor, dim: int, *, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of t [B] (any real scale; we pass t*1000 for t in [0,1]) -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class MLP(nn.Module):
    """x [B, in_dim] (and t [B] if time_dim > 0) -> [B, out_dim]; SiLU hidden layers."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden: int = 128, depth: int = 3, time_dim: int = 0,
                 activation: type[nn.Module] = nn.SiLU, num_classes: int = 0) -> None:
        super().__init__()
        self.time_dim = time_dim
        # num_classes > 0: a label y in 0..num_classes (num_classes itself is the null label) enters as a learned embedding
        self.label_emb = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        layers: list[nn.Module] = []
        width = in_dim + time_dim + (time_dim if num_classes else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        if self.time_dim:
            if t is None:
                raise ValueError("this MLP was built with time_dim > 0 and needs t")
            x = torch.cat([x, timestep_embedding(t * 1000.0, self.time_dim)], dim=-1)
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this MLP was built with num_classes > 0 and needs labels y")
            x = torch.cat([x, self.label_emb(y)], dim=-1)
        return self.body(x)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out) if emb_dim else None
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        if self.emb is not None and emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class SmallUNet(nn.Module):
    """A two-level U-Net for small images: x [B, C, H, W] (H, W divisible by 4), t [B] -> [B, C_out, H, W].

    About 0.4M parameters at ``base=32``: enough for recognisable MNIST samples on a CPU.
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, *, base: int = 32,
                 time_dim: int = 64, groups: int = 8, num_classes: int = 0) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.time_dim = time_dim
        emb = 4 * time_dim if time_dim else 0
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, emb), nn.SiLU(), nn.Linear(emb, emb)) if time_dim else None
        if num_classes and not time_dim:
            raise ValueError("a class-conditional SmallUNet needs time_dim > 0 (the label joins the time embedding)")
        # num_classes > 0: label y in 0..num_classes (num_classes = the null label), added to the time embedding
        self.label_emb = nn.Embedding(num_classes + 1, emb) if num_classes else None
        c1, c2 = base, 2 * base
        self.inp = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, emb, groups)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2 = _ResBlock(c1, c2, emb, groups)
        self.pool2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.mid = _ResBlock(c2, c2, emb, groups)
        self.up2 = _ResBlock(2 * c2, c2, emb, groups)
        self.up1 = _ResBlock(c2 + c1, c1, emb, groups)
        self.out = nn.Sequential(nn.GroupNorm(groups, c1), nn.SiLU(), nn.Conv2d(c1, out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        emb = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this U-Net was built with time_dim > 0 and needs t")
            emb = self.time_mlp(timestep_embedding(t * 1000.0, self.time_dim))
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this U-Net was built with num_classes > 0 and needs labels y")
            emb = emb + self.label_emb(y)
        h0 = self.inp(x)
        h1 = self.down1(h0, emb)
        h2 = self.down2(self.pool1(h1), emb)
        h = self.mid(self.pool2(h2), emb)
        h = nn.functional.interpolate(h, size=h2.shape[-2:], mode="nearest")
        h = self.up2(torch.cat([h, h2], dim=1), emb)
        h = nn.functional.interpolate(h, size=h1.shape[-2:], mode="nearest")
        h = self.up1(torch.cat([h, h1], dim=1), emb)
        return self.out(h)


class ResNet(nn.Module):
    """Residual conv blocks at one resolution: x [B, C, H, W] (any H, W), t [B] -> [B, C_out, H, W].

    ``blocks`` time-conditioned residual blocks of ``width`` channels, with no down- or up-sampling,
    so the cost of a call is proportional to H·W at a fixed width (latent vs pixel space).
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 64, blocks: int = 4, time_dim: int = 32,
                 groups: int = 8) -> None:
        super().__init__()
        self.time_dim = time_dim
        emb = 4 * time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(_ResBlock(width, width, emb, groups) for _ in range(blocks))
        self.out = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t * 1000.0, self.time_dim))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
