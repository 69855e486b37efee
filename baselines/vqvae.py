"""VQ-VAE: a discrete-latent autoencoder with a PixelCNN prior over its grid of code indices.

Model (van den Oord et al. 2017, "Neural Discrete Representation Learning", sec. 3). A conv
encoder maps an image x [B, C, H, W] to z_e(x) [B, D, h, w] with h = H / s, w = W / s
(``downsample`` s: ``log2 s`` stride-2 4×4 convolutions, then residual blocks ReLU → 3×3 → ReLU
→ 1×1, sec. 4.1). Each of the h·w vectors is replaced by its nearest codebook vector
e_k, k = argmin_j ‖z_e − e_j‖² (eq. 1-2; codebook K × D, ``num_codes`` × ``code_dim``), and the
decoder (the mirror image, stride-2 transposed convolutions) maps z_q(x) = e_k(x) back to the
mean m(z_q) of p(x | z_q). Gradients pass the quantiser by the straight-through estimator
z_q_st = z_e + sg[z_q − z_e] (sec. 3.2: the gradient at the decoder input z_q(x) is copied to
the encoder output z_e(x)). The training loss per example is eq. 3,

    L = −log p(x | z_q(x)) + ‖sg[z_e(x)] − e‖² + β ‖z_e(x) − sg[e]‖²,                (eq. 3)

summed over the h·w positions, β = ``commitment`` (0.25, sec. 3.2). With
``codebook_update="ema"`` the codebook term is dropped and the codebook follows exponential moving
averages instead (appendix A.1): per code i, with n_i assigned encodings of sum s_i in
the batch, N_i ← γ N_i + (1 − γ) n_i, m_i ← γ m_i + (1 − γ) s_i, e_i = m_i / Ñ_i, where
Ñ_i = (N_i + ε) / (n + K ε) · n, n = Σ_j N_j, is the Laplace-smoothed count (ε = ``laplace_eps``,
as in the paper's Sonnet implementation) that keeps e_i finite for rarely used codes. Our rule for
codes with N_i = 0 (never assigned, or unassigned in this batch with γ = 0): they keep their
value. A code unused for many steps has m_i and N_i shrink together; once N_i falls below ~ε the
smoothing pulls e_i towards the origin. By default (``data_init``) the codebook starts as K
encodings of the first training batch (drawn from the training generator; not in the paper).
EMA is the default here: with the codebook loss and Adam (lr 1e-3) the encodings outran the codes
in our runs (mnist5k defaults, 150 steps: commitment term 74 nats/dim and code perplexity 4.8 of
64 with ``"loss"``, against 0.68 and 24.4 with ``"ema"``).

Decoder likelihood: p(x | z_q) = N(x; m(z_q), diag σ²) with a learned per-dimension σ =
exp(log_obs_std), floored at ``min_obs_std`` (or a fixed σ = ``obs_std``), like
:class:`baselines.vae.VAE`'s Gaussian decoder, so that the bound below is a density bound on
uniformly dequantized 8-bit data (the harness adds 8 bits/dim for the (0, 1) range). Training
dequantizes the same way (y = (v + u)/256, u ~ U[0, 1) from the training generator,
``dequantize``), so the reconstruction term trained is the one the bound scores.

Prior (sec. 3.1, 4.1): p(z) over the h×w grid of indices is a PixelCNN
(:class:`baselines.pixelcnn.PixelCNNNet`, gated by default, K-way softmax per position, one-hot
codes as input), fitted by maximum likelihood to the codes of the *frozen* autoencoder. Training
is two-phase in one ``harness.train`` run: steps < ``prior_start`` train the autoencoder (Adam on
eq. 3), later steps train only the prior (its own Adam), on codes of uniformly dequantized
batches. ``prior="uniform"`` is the comparison model with p(z) = K^{−h·w}: no prior is trained
and every step trains the autoencoder (``prior_start`` is ignored).

Bound (``LowerBound``). q(z | x) is a point mass at the nearest codes, so its entropy is 0 and

    log p(x) ≥ ELBO(x) = log p(x | z_q(x)) + log p(z_q(x))                         [B] nats;

with the uniform prior the KL term is the constant h·w·log K (sec. 3.1: log K per latent). The
IWAE bound L_k with a deterministic q averages k equal weights, so L_k = ELBO for every k:
``elbo(x, num_importance=k)`` returns the same value for all k and ignores ``rng`` (no noise).

Sampling (``Sampler``): codes by ancestral sampling from the prior in raster order, position i of
example b the inverse CDF of its softmax at u_{b,i} ~ U[0, 1) (h·w uniforms per example from
``rng``, as :meth:`baselines.pixelcnn.PixelCNN.sample`), then the decoder mean m(z_q), clamped to
[0, 1] (no observation noise: the mean is the image). ``self.net`` is the prior's network, so the
harness's NFE is h·w per sample (prior evaluations; the one decoder call per batch is not counted).
``prior="uniform"`` has no prior network and no ``net``: it declares ``nfe_per_sample = 0``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.pixelcnn import PixelCNNConfig, PixelCNNNet
from harness.core.entries import ModelEntry, pinned
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG
from metrics.bpd import dequantize

__all__ = ["REGISTRY", "VQVAE", "VQVAEConfig", "code_perplexity", "vq_vae", "vq_vae_uniform"]

_LOG_2PI = math.log(2.0 * math.pi)
PRIORS = ("pixelcnn", "uniform")
CODEBOOK_UPDATES = ("loss", "ema")


@dataclass(frozen=True)
class VQVAEConfig:
    """Hyper-parameters of :class:`VQVAE` (saved in checkpoints).

    Attributes:
        shape: (C, H, W) images with values in (0, 1); H and W divisible by ``downsample``.
        downsample: s, a power of 2: the code grid is (H/s) × (W/s) (4 for 28×28 → 7×7, 2 for 8×8 → 4×4).
        hidden: channels of the encoder and decoder convolutions; num_res_blocks: residual blocks in each.
        num_codes: K codebook vectors; code_dim: D, their dimension.
        commitment: β of eq. 3.
        codebook_update: ``"ema"`` (appendix A.1; the default, see the module docstring) or ``"loss"``
            (the ‖sg[z_e] − e‖² term of eq. 3, the codebook trained by Adam with the autoencoder).
        codebook_decay: γ of the EMA update, in [0, 1); laplace_eps: ε of its smoothed counts.
        data_init: start the codebook from K encodings of the first training batch.
        obs_std: fixed decoder std; None learns one σ per data dimension (from ``init_obs_std``,
            floored at ``min_obs_std``).
        dequantize: train on uniformly dequantized pixels (v + u)/256, as the bound is evaluated.
        prior: ``"pixelcnn"`` (learned, phase 2) or ``"uniform"`` (p(z) = K^{−h·w}, nothing to learn).
        prior_start: first step of the prior phase: a number in (0, 1) is a fraction of ``steps``
            (rounded); a whole number >= 0 is the step itself. Counted against this config's
            ``steps``, so a run given another ``--steps`` keeps the same switch step.
        prior_channels, prior_layers, prior_kernel, prior_gated: the PixelCNN prior's ``channels``,
            ``num_layers``, ``first_kernel`` and ``gated`` (:class:`baselines.pixelcnn.PixelCNNConfig`).
        lr, prior_lr: Adam learning rates of the autoencoder and of the prior.
        grad_clip: max gradient norm in both phases (0 disables).
        batch_size, steps: training defaults.
        seed: seeds the parameter initialisation (a forked torch RNG; the global state is untouched).
    """

    shape: tuple[int, ...] = (1, 28, 28)
    downsample: int = 4
    hidden: int = 64
    num_res_blocks: int = 2
    num_codes: int = 64
    code_dim: int = 16
    commitment: float = 0.25
    codebook_update: str = "ema"
    codebook_decay: float = 0.99
    laplace_eps: float = 1e-5
    data_init: bool = True
    obs_std: float | None = None
    init_obs_std: float = 0.1
    min_obs_std: float = 1e-3
    dequantize: bool = True
    prior: str = "pixelcnn"
    prior_start: float = 0.5
    prior_channels: int = 64
    prior_layers: int = 5
    prior_kernel: int = 7
    prior_gated: bool = True
    lr: float = 1e-3
    prior_lr: float = 1e-3
    grad_clip: float = 0.0
    batch_size: int = 64
    steps: int = 4000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))  # JSON gives lists
        if len(self.shape) != 3 or any(s < 1 for s in self.shape):
            raise ValueError(f"shape={self.shape}: VQ-VAE models images (C, H, W)")
        s = self.downsample
        if s < 1 or s & (s - 1):
            raise ValueError(f"downsample must be a power of 2 (1, 2, 4, ...), got {s}")
        _, height, width = self.shape
        if height % s or width % s:
            raise ValueError(f"downsample={s} does not divide the image size {height}x{width}; use a power of 2 "
                             f"that divides both (e.g. 4 for 28x28, 2 for 8x8)")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(map(repr, PRIORS))}, got {self.prior!r}")
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {', '.join(map(repr, CODEBOOK_UPDATES))}, "
                             f"got {self.codebook_update!r}")
        if self.prior == "pixelcnn" and (height // s < 2 or width // s < 2):
            raise ValueError(f"the code grid {height // s}x{width // s} is too small for a PixelCNN prior "
                             f"(needs >= 2x2); lower downsample={s}")
        for name in ("hidden", "num_res_blocks", "code_dim", "prior_layers", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_codes < 2:
            raise ValueError(f"num_codes must be >= 2, got {self.num_codes}")
        if self.prior_channels < 2 or self.prior_channels % 2:
            raise ValueError(f"prior_channels must be an even number >= 2, got {self.prior_channels}")
        if self.prior_kernel < 3 or self.prior_kernel % 2 == 0:
            raise ValueError(f"prior_kernel must be odd and >= 3, got {self.prior_kernel}")
        if self.commitment < 0:
            raise ValueError(f"commitment must be >= 0, got {self.commitment}")
        if not 0.0 <= self.codebook_decay < 1.0:
            raise ValueError(f"codebook_decay must be in [0, 1), got {self.codebook_decay}")
        for name in ("laplace_eps", "init_obs_std", "min_obs_std", "lr", "prior_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.obs_std is not None and not self.obs_std > 0:
            raise ValueError(f"obs_std must be > 0 or None (learned), got {self.obs_std}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        p = self.prior_start
        if not (0.0 < p < 1.0 or (p >= 0 and float(p).is_integer())):
            raise ValueError(f"prior_start={p}: give a fraction of steps in (0, 1) or a whole step number >= 0")

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        return self.shape[1] // self.downsample, self.shape[2] // self.downsample

    @property
    def prior_start_step(self) -> int:
        """The first step that trains the prior (``prior_start`` resolved against ``steps``)."""
        p = self.prior_start
        return round(p * self.steps) if 0.0 < p < 1.0 else int(p)


def code_perplexity(codes: Tensor, num_codes: int) -> float:
    """exp(H(usage)) of the code indices ``codes`` (any shape, values in 0..K−1): K for uniform use, 1 for one code.

    usage_k = (number of k in ``codes``) / ``codes.numel()``; H in nats, with 0 log 0 = 0.
    """
    usage = torch.bincount(codes.reshape(-1), minlength=num_codes).to(torch.float64) / codes.numel()
    entropy = -(usage * torch.log(usage.clamp_min(1e-300))).sum()
    return float(torch.exp(entropy))


class _ResBlock(nn.Module):
    """x + 1×1(ReLU(3×3(ReLU(x)))) (sec. 4.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _encoder(cfg: VQVAEConfig) -> nn.Sequential:
    """[B, C, H, W] -> z_e [B, D, H/s, W/s]."""
    layers: list[nn.Module] = []
    c = cfg.shape[0]
    for _ in range(int(math.log2(cfg.downsample))):
        layers += [nn.Conv2d(c, cfg.hidden, 4, stride=2, padding=1), nn.ReLU()]
        c = cfg.hidden
    layers += [nn.Conv2d(c, cfg.hidden, 3, padding=1), *[_ResBlock(cfg.hidden) for _ in range(cfg.num_res_blocks)],
               nn.ReLU(), nn.Conv2d(cfg.hidden, cfg.code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: VQVAEConfig) -> nn.Sequential:
    """z_q [B, D, h, w] -> mean [B, C, h·s, w·s] (unconstrained; samples are clamped)."""
    layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden, 3, padding=1),
                               *[_ResBlock(cfg.hidden) for _ in range(cfg.num_res_blocks)], nn.ReLU()]
    stages = int(math.log2(cfg.downsample))
    for k in range(stages):
        last = k == stages - 1
        layers.append(nn.ConvTranspose2d(cfg.hidden, cfg.shape[0] if last else cfg.hidden, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
    if stages == 0:
        layers.append(nn.Conv2d(cfg.hidden, cfg.shape[0], 3, padding=1))
    return nn.Sequential(*layers)


class _CodePrior(nn.Module):
    """PixelCNN over code grids: codes int64 [B, h', w] -> logits [B, K, h', w] (one-hot input; i sees j < i)."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        h, w = cfg.grid
        arch = PixelCNNConfig(shape=(1, h, w), channels=cfg.prior_channels, num_layers=cfg.prior_layers,
                              first_kernel=cfg.prior_kernel, gated=cfg.prior_gated)
        self.num_codes = cfg.num_codes
        self.body = PixelCNNNet(arch, in_channels=cfg.num_codes, num_outputs=cfg.num_codes)

    def forward(self, codes: Tensor) -> Tensor:
        dtype = self.body.body[-1].weight.dtype
        return self.body(F.one_hot(codes, self.num_codes).permute(0, 3, 1, 2).to(dtype))


class VQVAE(nn.Module):
    """VQ-VAE with a PixelCNN (or uniform) prior (Sampler, LowerBound; trainable). See the module docstring.

    ``VQVAE(**overrides)`` builds from :class:`VQVAEConfig` fields (unknown keys rejected).
    Modules: ``encoder``, ``decoder``, ``codebook`` [K, D]; ``net`` (the prior's network) with
    ``prior="pixelcnn"``.
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.config = VQVAEConfig(**overrides)
        cfg = self.config
        self.data_spec = DataSpec(cfg.shape, "continuous", (0.0, 1.0))
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is restored
            torch.manual_seed(cfg.seed)
            self.encoder = _encoder(cfg)
            self.decoder = _decoder(cfg)
            book = torch.empty(cfg.num_codes, cfg.code_dim).uniform_(-1.0 / cfg.num_codes, 1.0 / cfg.num_codes)
            if cfg.prior == "pixelcnn":
                self.net = _CodePrior(cfg)
        self.codebook = nn.Parameter(book, requires_grad=cfg.codebook_update == "loss")
        if cfg.codebook_update == "ema":
            self.register_buffer("ema_count", torch.zeros(cfg.num_codes))  # N_i
            self.register_buffer("ema_sum", torch.zeros(cfg.num_codes, cfg.code_dim))  # m_i
        learned_std = cfg.obs_std is None
        self.log_obs_std = nn.Parameter(torch.full(cfg.shape, math.log(cfg.init_obs_std))) if learned_std else None
        self.register_buffer("initialized", torch.zeros(()))  # 1 once the codebook has seen data (data_init)
        if cfg.prior == "uniform":
            self.nfe_per_sample = 0  # no prior network; the decoder's one call per batch is not counted
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.ema_decay = None

    # ----------------------------------------------------------------------------- pieces
    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(f"expected x [B, {', '.join(map(str, self.config.shape))}], got {tuple(x.shape)}")

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codes (eq. 2): z_e [B, D, h, w] -> (codes int64 [B, h, w], z_q = e_codes [B, D, h, w]).

        Distances ‖z − e_k‖² = ‖z‖² − 2 z·e_k + ‖e_k‖²; z_q is differentiable in the codebook
        (the codebook term of eq. 3), not in z_e (use :meth:`straight_through`).
        """
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        book = self.codebook
        dist = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ book.t() + book.pow(2).sum(1)[None]
        codes = dist.argmin(1)
        return codes.view(b, h, w), self.embed(codes.view(b, h, w))

    def embed(self, codes: Tensor) -> Tensor:
        """Codes int64 [B, h, w] -> their vectors [B, D, h, w]."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    @staticmethod
    def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
        """z_e + sg[z_q − z_e]: the value of z_q, the gradient of z_e (sec. 3.2)."""
        return z_e + (z_q - z_e).detach()

    def obs_log_std(self) -> Tensor:
        """log σ of the decoder, [C, H, W] (learned, floored at ``min_obs_std``) or a scalar (fixed)."""
        if self.log_obs_std is None:
            return torch.tensor(math.log(self.config.obs_std), device=self.codebook.device)
        return self.log_obs_std.clamp(min=math.log(self.config.min_obs_std))

    def log_px_given_z(self, x: Tensor, z_q: Tensor) -> Tensor:
        """log N(x; m(z_q), diag σ²) [B] nats for x [B, C, H, W] and decoder input z_q [B, D, h, w]."""
        return self.gaussian_log_lik(x, self.decoder(z_q))

    def gaussian_log_lik(self, x: Tensor, mean: Tensor) -> Tensor:
        """log N(x; mean, diag σ²) [B] nats, x and mean [B, C, H, W]."""
        log_std = self.obs_log_std()
        return -0.5 * (((x - mean) * torch.exp(-log_std)).pow(2) + 2.0 * log_std + _LOG_2PI).flatten(1).sum(1)

    def log_prior(self, codes: Tensor) -> Tensor:
        """log p(z) [B] nats of code grids int64 [B, h, w]: the PixelCNN's Σ_i log p(z_i | z_<i), or −h·w·log K."""
        h, w = self.config.grid
        if self.config.prior == "uniform":
            return torch.full((codes.shape[0],), -h * w * math.log(self.config.num_codes), dtype=self.codebook.dtype,
                              device=codes.device)
        logp = torch.log_softmax(self.net(codes), dim=1)  # [B, K, h, w]
        return logp.gather(1, codes[:, None]).flatten(1).sum(1)

    @torch.no_grad()
    def ema_update(self, z_e: Tensor, codes: Tensor) -> None:
        """The EMA codebook update (appendix A.1), Laplace-smoothed counts; codes with N_i = 0 keep their value.

        z_e [B, D, h, w] (detached encodings), codes [B, h, w] their nearest codes.
        """
        cfg = self.config
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, cfg.code_dim).to(self.ema_sum.dtype)
        onehot = F.one_hot(codes.reshape(-1), cfg.num_codes).to(flat.dtype)  # [B·h·w, K]
        g = cfg.codebook_decay
        self.ema_count.mul_(g).add_(onehot.sum(0), alpha=1.0 - g)
        self.ema_sum.mul_(g).add_(onehot.t() @ flat, alpha=1.0 - g)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + cfg.laplace_eps) / (n + cfg.num_codes * cfg.laplace_eps) * n
        used = self.ema_count > 0
        self.codebook.data[used] = (self.ema_sum[used] / smoothed[used, None]).to(self.codebook.dtype)

    def bound_terms(self, x: Tensor) -> dict[str, Tensor]:
        """x [B, C, H, W] -> ``log_px_z``, ``log_pz`` [B] nats, ``codes`` [B, h, w], ``z_e``, ``z_q`` [B, D, h, w]."""
        self._check(x)
        x = x.to(self.codebook.dtype)
        z_e = self.encoder(x)
        codes, z_q = self.quantize(z_e)
        return {"log_px_z": self.log_px_given_z(x, z_q), "log_pz": self.log_prior(codes), "codes": codes,
                "z_e": z_e, "z_q": z_q}

    # ----------------------------------------------------------------------------- capabilities
    @property
    def num_codes(self) -> int:
        """K, the codebook size (``metrics.reconstruction`` reports the code perplexity out of K)."""
        return self.config.num_codes

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The nearest codes int64 [B, h, w] of x [B, C, H, W] in (0, 1)."""
        self._check(x)
        return self.quantize(self.encoder(x.to(self.codebook.dtype)))[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean m(z_q(x)) [B, C, H, W] of x [B, C, H, W] in (0, 1) (Reconstructor; not clamped)."""
        self._check(x)
        return self.decoder(self.quantize(self.encoder(x.to(self.codebook.dtype)))[1])

    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None) -> Tensor:
        """log p(x | z_q(x)) + log p(z_q(x)) [B] nats, x [B, C, H, W] in (0, 1) (dequantized pixels).

        q(z|x) is a point mass (entropy 0), so this is the ELBO; the IWAE bound L_k of a
        deterministic q averages k equal weights and equals it, so every ``num_importance`` >= 1
        returns the same value. ``rng`` is accepted and unused (no noise).
        """
        if num_importance < 1:
            raise ValueError(f"num_importance must be >= 1, got {num_importance}")
        terms = self.bound_terms(x)
        return terms["log_px_z"] + terms["log_pz"]

    @torch.no_grad()
    def sample_codes(self, n: int, rng: BatchRNG) -> Tensor:
        """int64 [n, h, w] from the prior in raster order (h·w calls of ``self.net``; inverse CDF at u ~ ``rng``)."""
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        cfg = self.config
        h, w = cfg.grid
        device = self.codebook.device
        u = rng.uniform((h * w,), dtype=torch.float64).to(device)  # [n, h·w]
        codes = torch.zeros(n, h, w, dtype=torch.int64, device=device)
        uniform = torch.full((n, cfg.num_codes), 1.0 / cfg.num_codes, dtype=torch.float64, device=device)
        for i in range(h):
            for j in range(w):
                if cfg.prior == "uniform":
                    probs = uniform
                else:  # rows > i cannot influence row i (no mask looks below its row): feed rows 0..i
                    probs = torch.softmax(self.net(codes[:, : i + 1])[:, :, i, j].to(torch.float64), dim=1)
                cdf = probs.cumsum(1)
                codes[:, i, j] = (cdf < u[:, i * w + j, None]).sum(1).clamp_(max=cfg.num_codes - 1)
        return codes

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """float32 [n, C, H, W] in [0, 1]: the decoder mean of prior codes (:meth:`sample_codes`), clamped."""
        return self.decoder(self.embed(self.sample_codes(n, rng))).clamp(0.0, 1.0).to(torch.float32)

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[autoencoder Adam (encoder, decoder, σ, codebook unless EMA), prior Adam (pixelcnn prior only)]."""
        prior = list(self.net.parameters()) if self.config.prior == "pixelcnn" else []
        prior_ids = {id(p) for p in prior}
        ae = [p for p in self.parameters() if p.requires_grad and id(p) not in prior_ids]
        opts = [torch.optim.Adam(ae, lr=self.config.lr)]
        if prior:
            opts.append(torch.optim.Adam(prior, lr=self.config.prior_lr))
        return opts

    def _train_inputs(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        self._check(batch)
        x = batch.to(self.codebook.dtype)
        if self.config.dequantize:  # v/255 -> (v + u)/256, u ~ U[0, 1) from the training generator
            noise = torch.rand(x.shape, generator=generator).to(x.device)
            x = dequantize(torch.round(x.clamp(0.0, 1.0) * 255.0), noise, (0.0, 1.0)).to(x.dtype)
        return x

    @torch.no_grad()
    def _data_init(self, z_e: Tensor, generator: torch.Generator) -> None:
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.config.code_dim)
        k = self.config.num_codes
        idx = (torch.randperm(len(flat), generator=generator)[:k] if len(flat) >= k
               else torch.randint(0, len(flat), (k,), generator=generator))
        self.codebook.data.copy_(flat[idx.to(flat.device)])

    def _clip(self, params: list[Tensor]) -> None:
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """Phase 1 (step < prior_start, or any step with the uniform prior): one Adam step on eq. 3 / (C·H·W).

        Phase 2: one Adam step of the prior on −log p(z_q(x)) / (h·w) (nats per code) with the
        autoencoder frozen. Returns the loss terms (nats per data dim or per code), the batch's code
        ``perplexity`` and ``phase`` (1 or 2).
        """
        cfg = self.config
        x = self._train_inputs(batch, generator)
        dims = self.data_spec.num_dims
        if cfg.prior == "pixelcnn" and step >= cfg.prior_start_step:
            with torch.no_grad():
                codes, _ = self.quantize(self.encoder(x))
            opt = optimizers[1]
            opt.zero_grad(set_to_none=True)
            nll = -self.log_prior(codes).mean() / (codes.shape[1] * codes.shape[2])
            nll.backward()
            self._clip(list(self.net.parameters()))
            opt.step()
            return {"prior_nll_per_code": float(nll.detach()), "perplexity": code_perplexity(codes, cfg.num_codes),
                    "phase": 2.0}
        opt = optimizers[0]
        z_e = self.encoder(x)
        if cfg.data_init and not bool(self.initialized):
            self._data_init(z_e, generator)
        self.initialized.fill_(1.0)
        codes, z_q = self.quantize(z_e)
        mean = self.decoder(self.straight_through(z_e, z_q))
        log_px = self.gaussian_log_lik(x, mean)
        commit = (z_e - z_q.detach()).pow(2).flatten(1).sum(1)
        codebook = ((z_e.detach() - z_q).pow(2).flatten(1).sum(1) if cfg.codebook_update == "loss"
                    else torch.zeros_like(commit))
        loss = (-log_px + codebook + cfg.commitment * commit).mean() / dims
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip([p for group in opt.param_groups for p in group["params"]])
        opt.step()
        if cfg.codebook_update == "ema":
            self.ema_update(z_e.detach(), codes)
        recon_nll = float(-log_px.detach().mean()) / dims
        return {"loss": float(loss.detach()), "recon_nll_per_dim": recon_nll,
                "recon_mse": float((mean.detach() - x).pow(2).mean()),
                "recon_bpd": recon_nll / math.log(2.0) + 8.0, "commitment": float(commit.detach().mean()) / dims,
                "perplexity": code_perplexity(codes, cfg.num_codes), "phase": 1.0}


VQVAE.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
     for f in fields(VQVAEConfig)])


def vq_vae(**overrides: Any) -> VQVAE:
    """``vq-vae``: :class:`VQVAE` with the PixelCNN prior over codes (trained after the autoencoder)."""
    return VQVAE(**pinned("vq-vae", "prior", "pixelcnn", overrides, {"uniform": "vq-vae-uniform"}))


def vq_vae_uniform(**overrides: Any) -> VQVAE:
    """``vq-vae-uniform``: :class:`VQVAE` with the uniform prior p(z) = K^{−h·w} (every step trains the AE)."""
    return VQVAE(**pinned("vq-vae-uniform", "prior", "uniform", overrides, {"pixelcnn": "vq-vae"}))


vq_vae.__signature__ = VQVAE.__signature__  # type: ignore[attr-defined]
vq_vae_uniform.__signature__ = VQVAE.__signature__  # type: ignore[attr-defined]

_TINY = {"hidden": 8, "num_res_blocks": 1, "num_codes": 8, "code_dim": 4, "prior_channels": 8, "prior_layers": 1,
         "prior_kernel": 3, "steps": 4, "batch_size": 32}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("vq-vae", "vae", "baselines.vqvae:vq_vae",
               "VQ-VAE (van den Oord et al. 2017): conv encoder/decoder, K-code nearest-neighbour bottleneck with "
               "straight-through gradients (codebook loss or EMA), Gaussian decoder, gated PixelCNN prior over the "
               "code grid trained in a second phase; ELBO = log p(x|z_q) + log p(z_q); NFE = h*w prior calls",
               tiny_config=dict(_TINY)),
    ModelEntry("vq-vae-uniform", "vae", "baselines.vqvae:vq_vae_uniform",
               "VQ-VAE with a uniform prior over codes (no prior training): ELBO = log p(x|z_q) - h*w*log K",
               tiny_config=dict(_TINY)),
)
