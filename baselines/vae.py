"""Variational autoencoders: VAE, β-VAE, multi-sample VAE and IWAE, with MLP encoder and decoder.

One class, :class:`VAE`, configured by a frozen :class:`VAEConfig`; the registered names (``vae``,
``multi-sample-vae``, ``iwae``, ``beta-vae``, ``vae-2d``) are the same class with different default
configs. Capabilities: ``Sampler``, ``LowerBound`` and ``Encoder`` (``harness.core.protocols``).

Model. p(z) = N(0, I_Z); q(z|x) = N(μ(x), diag σ²(x)) from an MLP encoder (Kingma & Welling 2014,
sec. 3 and app. C.2); p(x|z) from an MLP decoder, which is ``self.net`` (the network ``harness.core.nfe``
counts: one call per batch of ancestral samples). Images are flattened to D = C·H·W, as in the
MLPs of Burda et al. (2016, sec. 5: 784-200-200-50, tanh).

Decoders (``likelihood``):

* ``"bernoulli"``: p(x|z) = Π_d Bernoulli(x_d; sigmoid(logit_d(z))), for binary images. The data
  spec is **discrete with 2 categories**, so the harness binarizes 8-bit pixels as ``pixel >= 128``
  (a fixed binarization, ``harness.train.data_to_model`` / ``metrics.likelihood.model_inputs``) both
  for training and for evaluation. Then ``elbo`` is a bound on a probability *mass* and
  ``elbo_bpd`` / ``iwae_bpd`` are true upper bounds on the bits/dim of the binarized data (no
  dequantization offset). We do not declare a continuous (0, 1) spec: the harness would then
  dequantize pixels to (v + u)/256 and add 8 bits/dim, and a Bernoulli "likelihood" of soft targets
  is not a density on [0, 1]^D, so the reported number would bound nothing. Consequence: Burda et
  al.'s *dynamic* binarization (resampling binary pixels with mean equal to the intensity every
  epoch) is not available, because the model never sees intensities; this is the fixed
  binarization setting of Burda et al. (sec. 5, "IWAE still beats VAE but overfits more").
  Samples are int64 in {0, 1}.
* ``"gaussian"``: p(x|z) = N(x; m(z), diag σ²) with a learned per-dimension σ = exp(log_obs_std)
  (floored at ``min_obs_std``), or a fixed σ = ``obs_std``. For 2-D / tabular rows, and for images
  in ``value_range`` (the harness dequantizes 8-bit pixels uniformly and adds its offset, so the
  bits/dim remain an upper bound; the mass the Gaussian puts outside the box is simply wasted).
  Samples are m(z) + σ ε (or m(z) when ``sample_noise=False``), clamped to ``value_range`` for images.

Posterior std (``posterior_std``; the three parameterisations of the "Modern PyTorch VAE" tutorial):
the encoder's second head s gives ``"logvar"``: σ = exp(s/2); ``"softplus"``:
σ = softplus(s) + eps; ``"sigmoid"``: σ = sigmoid(s)·bound + eps. ``encode`` always returns
(μ, log σ²).

Objectives (``objective``, ``num_samples`` = k), with z_i = μ + σ ⊙ ε_i, ε_i ~ N(0, I) and log
weights log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x):

* ``"elbo"`` (k = 1): L = log p(x|z_1) − KL(q‖p) (Kingma & Welling 2014, eq. 7, analytic KL from
  their app. B) or, with ``kl="mc"``, the single-sample estimate log w_1 (their eq. 6).
* ``"multi-sample-elbo"``: (1/k) Σ_i [log p(x|z_i)] − KL (or (1/k) Σ_i log w_i with ``kl="mc"``): the
  "VAE with k samples" of Burda et al. (2016, sec. 5.1): the same bound as the ELBO, with a k-sample
  gradient estimate. Its expectation is the ELBO.
* ``"iwae"``: L_k = log (1/k) Σ_i w_i (Burda et al. 2016, eq. 8), computed as logsumexp − log k with
  full Gaussian log-densities (never an analytic KL). L_1 is the ``kl="mc"`` ELBO; L_k ≥ the mean of
  the same k log weights (Jensen), and L_k rises with k to log p(x) (their Theorem 1).

β-VAE and KL warm-up: the training objective weights the KL term (or, for ``kl="mc"`` and IWAE, the
log p(z) − log q(z|x) part of each log weight) by β_t = beta · min(1, t / kl_warmup_steps)
(Higgins et al. 2017, eq. 4; linear warm-up as in Sønderby et al. 2016 / Bowman et al. 2016). With
β_t ≠ 1 the training loss is not a bound; :meth:`VAE.elbo` always uses β = 1.

Reconstruction reduction (``reduction``): ``"sum"`` (the default) sums log p(x|z) over the D data
dimensions, as the bound requires. ``"mean"`` averages it over them instead (what
``F.binary_cross_entropy(..., reduction="mean")`` does) while the KL stays summed over the latents:
the training loss is then −log p(x|z)/D + β KL, the reconstruction shrunk by D (784 for MNIST)
relative to the KL, a known bug that collapses the posterior (the tutorial's VAE-f, seed 004#12).
For the Monte Carlo and IWAE objectives each log weight's log p(x|z_i) is divided by D alike. Only
the training loss changes: :meth:`VAE.elbo` and the bits/dim the harness reports are the true bound.

Evaluation (``LowerBound``): ``elbo(x, num_importance=1)`` is the analytic-KL ELBO with one decoder
sample; ``num_importance=k > 1`` is the IWAE bound L_k, *whatever the training objective*. Their
noise comes from ``rng`` (the per-example ``BatchRNG`` that ``metrics.likelihood.bound_bpd`` passes:
example i's bound is the same in any batch), else from ``generator``, else from the global torch
RNG. Everything else (initialisation, training noise, sampling) uses explicit generators / ``BatchRNG``.

Units: log-densities and bounds are nats per example, summed over dimensions, shape [B].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.nets import MLP
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["REGISTRY", "VAE", "VAEConfig", "beta_vae", "iwae", "multi_sample_vae", "vae", "vae_2d"]

_LOG_2PI = math.log(2.0 * math.pi)


def _bound_noise(rng: BatchRNG | None, generator: torch.Generator | None, shape: tuple[int, int, int]) -> Tensor:
    """Standard normal ε of ``shape`` = (k, B, Z) on the CPU: per example from ``rng`` ([B, k, Z] transposed), else
    one draw from ``generator`` (the global torch RNG when None)."""
    if rng is None:
        return torch.randn(shape, generator=generator)
    if generator is not None:
        raise ValueError("give elbo either rng or generator, not both")
    k, b, z = shape
    if len(rng) != b:
        raise ValueError(f"rng covers {len(rng)} examples but the batch has {b}")
    return rng.normal((k, z)).cpu().transpose(0, 1)
LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae", "multi-sample-elbo")
POSTERIOR_STDS = ("logvar", "softplus", "sigmoid")
KL_ESTIMATORS = ("analytic", "mc")
REDUCTIONS = ("sum", "mean")
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "silu": nn.SiLU, "relu": nn.ReLU}


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of :class:`VAE` (every field is saved in checkpoints).

    Attributes:
        data_shape: per-example shape: (D,) for rows, (C, H, W) for images (flattened by the MLPs).
        likelihood: ``"bernoulli"`` (binary images; discrete 2-category data spec) or ``"gaussian"``.
        latent_dim: Z.
        hidden, depth, activation: width, number of hidden layers and nonlinearity of both MLPs.
        posterior_std: ``"logvar"`` | ``"softplus"`` | ``"sigmoid"`` (see the module docstring).
        std_bound, std_eps: bound of the sigmoid parameterisation and eps of softplus / sigmoid.
        obs_std: fixed Gaussian decoder std; None learns one σ per data dimension.
        init_obs_std, min_obs_std: initial value and floor of the learned σ.
        value_range: model-space range of Gaussian-decoder images (ignored for rows and Bernoulli).
        objective: ``"elbo"`` | ``"iwae"`` | ``"multi-sample-elbo"``; num_samples: k (1 for ``"elbo"``).
        kl: ``"analytic"`` or ``"mc"`` KL term for the ELBO objectives (IWAE is always Monte Carlo).
        beta: KL weight (β-VAE); kl_warmup_steps: linear warm-up of β from 0 (0: none).
        reduction: ``"sum"`` or ``"mean"`` of log p(x|z) over the data dimensions in the training loss
            (see the module docstring; ``"mean"`` reproduces the posterior-collapse bug).
        sample_noise: Gaussian decoder: add σ ε to the decoder mean when sampling.
        lr, adam_eps, grad_clip: Adam settings (Burda et al. use eps 1e-4); grad_clip None: no clipping.
        ema_decay: EMA of the weights kept by ``harness.train`` (None: none).
        batch_size, steps: training defaults (``default_batch_size`` / ``default_steps``).
        seed: parameter initialisation seed.
    """

    data_shape: tuple[int, ...] = (1, 28, 28)
    likelihood: str = "bernoulli"
    latent_dim: int = 50
    hidden: int = 200
    depth: int = 2
    activation: str = "tanh"
    posterior_std: str = "logvar"
    std_bound: float = 10.0
    std_eps: float = 1e-6
    obs_std: float | None = None
    init_obs_std: float = 1.0
    min_obs_std: float = 1e-3
    value_range: tuple[float, float] = (0.0, 1.0)
    objective: str = "elbo"
    num_samples: int = 1
    kl: str = "analytic"
    beta: float = 1.0
    kl_warmup_steps: int = 0
    reduction: str = "sum"
    sample_noise: bool = True
    lr: float = 1e-3
    adam_eps: float = 1e-4
    grad_clip: float | None = None
    ema_decay: float | None = None
    batch_size: int = 100
    steps: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        # JSON (checkpoints, --model-arg) turns tuples into lists: normalise
        object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        if len(self.data_shape) not in (1, 3) or any(s < 1 for s in self.data_shape):
            raise ValueError(f"data_shape must be (D,) or (C, H, W) of positive sizes; got {self.data_shape}")
        _one_of("likelihood", self.likelihood, LIKELIHOODS)
        _one_of("objective", self.objective, OBJECTIVES)
        _one_of("posterior_std", self.posterior_std, POSTERIOR_STDS)
        _one_of("kl", self.kl, KL_ESTIMATORS)
        _one_of("reduction", self.reduction, REDUCTIONS)
        _one_of("activation", self.activation, tuple(ACTIVATIONS))
        if self.likelihood == "bernoulli" and len(self.data_shape) != 3:
            raise ValueError(f"likelihood 'bernoulli' is for binary images (C, H, W); got data_shape {self.data_shape}; "
                             "use likelihood='gaussian' for rows")
        for name in ("latent_dim", "hidden", "depth", "num_samples", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.objective == "elbo" and self.num_samples != 1:
            raise ValueError(f"objective 'elbo' uses one sample; got num_samples={self.num_samples} "
                             "(use objective 'multi-sample-elbo' or 'iwae' for k > 1)")
        if self.kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be >= 0; got {self.kl_warmup_steps}")
        for name in ("std_bound", "std_eps", "init_obs_std", "min_obs_std", "lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0; got {self.beta}")
        if self.obs_std is not None and not self.obs_std > 0:
            raise ValueError(f"obs_std must be > 0 or None (learned); got {self.obs_std}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None; got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None; got {self.ema_decay}")
        lo, hi = self.value_range
        if len(self.value_range) != 2 or not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with lo < hi; got {self.value_range}")


class VAE(nn.Module):
    """MLP VAE / β-VAE / multi-sample VAE / IWAE (see the module docstring). ``VAE(**config_fields)``."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = VAEConfig(**config)
        self.config = cfg
        dim = math.prod(cfg.data_shape)
        self.data_dim = dim
        act = ACTIVATIONS[cfg.activation]
        # nets.MLP initialises from the global RNG; build it inside fork_rng so the global state is
        # untouched, then re-initialise every Linear from our own seeded generator.
        with torch.random.fork_rng(devices=[]):
            self.encoder = MLP(dim, 2 * cfg.latent_dim, hidden=cfg.hidden, depth=cfg.depth, activation=act)
            self.net = MLP(cfg.latent_dim, dim, hidden=cfg.hidden, depth=cfg.depth, activation=act)
        g = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            for module in (*self.encoder.modules(), *self.net.modules()):
                if isinstance(module, nn.Linear):  # PyTorch's default: U(±1/sqrt(fan_in)) for weight and bias
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.uniform_(-bound, bound, generator=g)
                    module.bias.uniform_(-bound, bound, generator=g)
        if cfg.likelihood == "gaussian" and cfg.obs_std is None:
            self.log_obs_std = nn.Parameter(torch.full((dim,), math.log(cfg.init_obs_std)))
        else:
            self.log_obs_std = None
        if cfg.likelihood == "bernoulli":
            self.data_spec = DataSpec(cfg.data_shape, "discrete", num_categories=2)
        else:
            self.data_spec = DataSpec(cfg.data_shape, "continuous", value_range=cfg.value_range)
        self.ema_decay = cfg.ema_decay
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps

    # ----------------------------------------------------------------------------- distributions
    def _flat(self, x: Tensor) -> Tensor:
        """x [B, *data_shape] (int or float) -> float32 [B, D] on the parameters' device."""
        p = self.encoder.body[0].weight
        return x.reshape(x.shape[0], -1).to(device=p.device, dtype=p.dtype)

    def _posterior(self, xf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """xf [B, D] -> (μ, σ, log σ²), each [B, Z]."""
        h = self.encoder(xf)
        mean, s = h.chunk(2, dim=-1)
        cfg = self.config
        if cfg.posterior_std == "logvar":
            return mean, torch.exp(0.5 * s), s
        std = (F.softplus(s) if cfg.posterior_std == "softplus" else torch.sigmoid(s) * cfg.std_bound) + cfg.std_eps
        return mean, std, 2.0 * torch.log(std)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): x [B, *data_shape] -> (mean [B, Z], logvar [B, Z])."""
        mean, _, logvar = self._posterior(self._flat(x))
        return mean, logvar

    def obs_log_std(self) -> Tensor:
        """log σ of the Gaussian decoder, [D] (learned, floored at ``min_obs_std``) or a scalar (fixed)."""
        cfg = self.config
        if self.log_obs_std is None:
            return torch.tensor(math.log(cfg.obs_std or 1.0), device=self.encoder.body[0].weight.device)
        return self.log_obs_std.clamp(min=math.log(cfg.min_obs_std))

    def log_px_given_z(self, xf: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats: xf [B, D], z [k, B, Z] -> [k, B] (one decoder call on k·B latents)."""
        k, b, _ = z.shape
        out = self.net(z.reshape(k * b, -1)).reshape(k, b, -1)
        if self.config.likelihood == "bernoulli":
            # log Bernoulli(x; sigmoid(l)) = x·l − softplus(l) = −BCE-with-logits
            return (xf * out - F.softplus(out)).sum(-1)
        log_std = self.obs_log_std()
        return -0.5 * (((xf - out) * torch.exp(-log_std)).pow(2) + 2.0 * log_std + _LOG_2PI).sum(-1)

    @staticmethod
    def analytic_kl(mean: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(μ, e^{logvar}) ‖ N(0, I)) = ½ Σ (μ² + e^{logvar} − logvar − 1), [B] nats (Kingma & Welling 2014, app. B)."""
        return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)

    # ----------------------------------------------------------------------------- objectives
    def bound_terms(self, x: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """Every ingredient of the objectives for fixed reparameterisation noise.

        Args:
            x: [B, *data_shape] in model space.
            eps: [k, B, Z] standard normal draws; z_i = μ + σ ⊙ ε_i.

        Returns:
            ``log_px_z``, ``log_pz``, ``log_qz`` ([k, B] nats), ``kl`` ([B], analytic), ``mean``,
            ``logvar`` ([B, Z]).
        """
        xf = self._flat(x)
        mean, std, logvar = self._posterior(xf)
        z = mean + std * eps
        # log q(z|x) with z − μ = σ ε: −½ Σ (ε² + log σ² + log 2π)
        log_qz = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(-1)
        log_pz = -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)
        return {"log_px_z": self.log_px_given_z(xf, z), "log_pz": log_pz, "log_qz": log_qz,
                "kl": self.analytic_kl(mean, logvar), "mean": mean, "logvar": logvar}

    @staticmethod
    def combine(terms: dict[str, Tensor], objective: str, *, kl: str = "analytic", beta: float = 1.0,
                recon_weight: float = 1.0) -> Tensor:
        """The per-example objective [B] (nats; a lower bound on log p(x) when beta = 1 and recon_weight = 1)
        from :meth:`bound_terms`.

        ``"elbo"`` / ``"multi-sample-elbo"``: mean over the k samples of log p(x|z_i) − β KL (analytic)
        or of log p(x|z_i) + β(log p(z_i) − log q(z_i|x)) (``kl="mc"``); ``"iwae"``:
        logsumexp_i(log p(x|z_i) + β(log p(z_i) − log q(z_i|x))) − log k (Burda et al. 2016, eq. 8).
        Every log p(x|z_i) is multiplied by ``recon_weight`` (1/D for ``reduction="mean"``).
        """
        _one_of("objective", objective, OBJECTIVES)
        _one_of("kl", kl, KL_ESTIMATORS)
        log_px_z, k = recon_weight * terms["log_px_z"], terms["log_px_z"].shape[0]
        if objective == "iwae":
            log_w = log_px_z + beta * (terms["log_pz"] - terms["log_qz"])
            return torch.logsumexp(log_w, dim=0) - math.log(k)
        if kl == "analytic":
            return log_px_z.mean(0) - beta * terms["kl"]
        return (log_px_z + beta * (terms["log_pz"] - terms["log_qz"])).mean(0)

    def beta_at(self, step: int) -> float:
        """β_t = beta · min(1, step / kl_warmup_steps) (beta when there is no warm-up)."""
        cfg = self.config
        if cfg.kl_warmup_steps == 0:
            return cfg.beta
        return cfg.beta * min(1.0, step / cfg.kl_warmup_steps)

    @property
    def recon_weight(self) -> float:
        """The weight of log p(x|z) in the training loss: 1 (``reduction="sum"``) or 1/D (``"mean"``)."""
        return 1.0 if self.config.reduction == "sum" else 1.0 / self.data_dim

    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """Lower bound on log p(x), [B] nats: k = 1 the analytic-KL ELBO, k > 1 the IWAE bound L_k (eq. 8).

        Independent of the training objective, of β (always β = 1) and of ``reduction`` (always the
        sum over dimensions). Noise ε [k, B, Z] is drawn on the CPU: with ``rng`` (a ``BatchRNG`` over
        the B examples), example i's ε[:, i] is ``rng.normal((k, Z))[i]``, independent of the batch;
        otherwise one tensor from ``generator`` (the global torch RNG when None). Giving both raises
        ValueError.
        """
        if num_importance < 1:
            raise ValueError(f"num_importance must be >= 1, got {num_importance}")
        eps = _bound_noise(rng, generator, (num_importance, x.shape[0], self.config.latent_dim))
        terms = self.bound_terms(x, eps.to(self.encoder.body[0].weight.device))
        return self.combine(terms, "elbo" if num_importance == 1 else "iwae")

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=self.config.lr, eps=self.config.adam_eps)]

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """One Adam step on −mean(objective) over the batch; noise ε [k, B, Z] from ``generator``.

        With ``reduction="mean"`` the objective's log p(x|z) is divided by D (:meth:`recon_weight`)."""
        cfg = self.config
        (opt,) = optimizers
        beta = self.beta_at(step)
        eps = torch.randn((cfg.num_samples, batch.shape[0], cfg.latent_dim), generator=generator)
        terms = self.bound_terms(batch, eps.to(batch.device))
        loss = -self.combine(terms, cfg.objective, kl=cfg.kl, beta=beta, recon_weight=self.recon_weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), "kl": float(terms["kl"].detach().mean()), "beta": float(beta)}

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """Ancestral samples [n, *data_shape]: z ~ p(z) from ``rng.child('latent')``, x ~ p(x|z) from ``rng.child('noise')``.

        Bernoulli: int64 in {0, 1}. Gaussian: float32 m(z) + σ ε (m(z) if ``sample_noise`` is False),
        clamped to ``value_range`` for images; rows are not clamped. One ``self.net`` call.
        """
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        z = rng.child("latent").normal((self.config.latent_dim,)).to(self.encoder.body[0].weight.device)
        return self.decode_sample(z, rng)

    def decode_sample(self, z: Tensor, rng: BatchRNG) -> Tensor:
        """x ~ p(x|z) for latents z [n, latent_dim], as :meth:`sample` describes (noise from ``rng.child('noise')``)."""
        shape = self.config.data_shape
        out = self.net(z).reshape(len(z), *shape)
        if self.config.likelihood == "bernoulli":
            u = rng.child("noise").uniform(shape).to(out.device)
            return (u < torch.sigmoid(out)).to(torch.int64)
        x = out
        if self.config.sample_noise:
            std = torch.exp(self.obs_log_std()).reshape(-1).expand(self.data_dim).reshape(shape)
            x = out + std * rng.child("noise").normal(shape).to(out.device)
        if len(shape) == 3:
            x = x.clamp(*self.config.value_range)
        return x.to(torch.float32)


# --------------------------------------------------------------------------------- registered names
_MNIST_BURDA = {"data_shape": (1, 28, 28), "likelihood": "bernoulli", "latent_dim": 50, "hidden": 200, "depth": 2,
                "activation": "tanh"}  # Burda et al. 2016, 1 stochastic layer: 784-200-200-50, tanh
DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {**_MNIST_BURDA, "objective": "elbo", "num_samples": 1},
    "multi-sample-vae": {**_MNIST_BURDA, "objective": "multi-sample-elbo", "num_samples": 5},
    "iwae": {**_MNIST_BURDA, "objective": "iwae", "num_samples": 5},
    "beta-vae": {**_MNIST_BURDA, "objective": "elbo", "beta": 4.0, "kl_warmup_steps": 1000},
    "vae-2d": {"data_shape": (2,), "likelihood": "gaussian", "latent_dim": 2, "hidden": 64, "depth": 2,
               "activation": "silu", "objective": "elbo", "num_samples": 1, "batch_size": 256, "steps": 3000,
               "adam_eps": 1e-8},
}
_FIELDS = {f.name for f in fields(VAEConfig)}
assert all(set(d) <= _FIELDS for d in DEFAULTS.values())


def _build(name: str, config: dict[str, Any]) -> VAE:
    return VAE(**{**DEFAULTS[name], **config})


def vae(**config: Any) -> VAE:
    """``vae``: Bernoulli MLP VAE on binarized 28×28 images, ELBO (Kingma & Welling 2014), Burda's 1-layer net."""
    return _build("vae", config)


def multi_sample_vae(**config: Any) -> VAE:
    """``multi-sample-vae``: the same, trained with the mean of k=5 ELBOs (Burda et al.'s "VAE, k=5")."""
    return _build("multi-sample-vae", config)


def iwae(**config: Any) -> VAE:
    """``iwae``: the same, trained with the IWAE bound L_5 (Burda et al. 2016, eq. 8)."""
    return _build("iwae", config)


def beta_vae(**config: Any) -> VAE:
    """``beta-vae``: the same with β = 4 (Higgins et al. 2017) reached by a 1000-step linear warm-up."""
    return _build("beta-vae", config)


def vae_2d(**config: Any) -> VAE:
    """``vae-2d``: Gaussian-decoder VAE for 2-D / tabular rows (latent 2, learned per-dim σ)."""
    return _build("vae-2d", config)


_TINY_IMAGE = {"latent_dim": 4, "hidden": 32, "depth": 1, "batch_size": 32, "steps": 5}
REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("vae", "vae", "baselines.vae:vae", "MLP VAE, Bernoulli decoder on binarized 28x28 (pixel>=128), ELBO",
               tiny_config=dict(_TINY_IMAGE)),
    ModelEntry("multi-sample-vae", "vae", "baselines.vae:multi_sample_vae",
               "MLP VAE trained with the mean of k ELBOs (Burda et al.'s VAE with k samples), binarized 28x28",
               tiny_config={**_TINY_IMAGE, "num_samples": 2}),
    ModelEntry("iwae", "vae", "baselines.vae:iwae", "importance weighted autoencoder (IWAE, k=5), binarized 28x28",
               tiny_config={**_TINY_IMAGE, "num_samples": 2}),
    ModelEntry("beta-vae", "vae", "baselines.vae:beta_vae", "beta-VAE (beta=4, linear KL warm-up), binarized 28x28",
               tiny_config={**_TINY_IMAGE, "kl_warmup_steps": 3}),
    ModelEntry("vae-2d", "vae", "baselines.vae:vae_2d", "Gaussian-decoder MLP VAE for 2-D / tabular rows, latent 2",
               tiny_config={"hidden": 16, "depth": 1, "batch_size": 64, "steps": 5}),
)


def config_dict(model: VAE) -> dict[str, Any]:
    """The model's config as a plain dict (what checkpoints store)."""
    return asdict(model.config)
