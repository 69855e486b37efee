"""NCP-VAE: a VAE whose prior is reweighted by a binary classifier (a noise contrastive prior).

Aneja, Schwing, Kautz & Vahdat 2021, "A Contrastive Learning Approach for Training Variational
Autoencoder Priors" (NeurIPS), sec. 3. One class, :class:`NCPVAE`, registered as ``ncp-vae``;
capabilities ``Sampler`` and ``LowerBound`` (``harness.core.protocols``).

Model. The VAE is ``baselines.vae.VAE`` (built inside this model, by composition: ``self.vae``) with
the ``vae-2d`` defaults (Gaussian decoder for rows, latent Z = 2) updated by the config's ``vae``
mapping; its prior is p(z) = N(0, I_Z). A classifier D(z) = sigmoid(f(z)) (an MLP, ``self.net``,
f its logit) separates codes of the aggregate posterior q(z) = E_{p_data(x)} q(z|x) (label 1) from
prior draws z ~ p(z) (label 0). The Bayes-optimal classifier is D*(z) = q(z) / (q(z) + p(z)), so
the reweighting factor r(z) = D(z) / (1 − D(z)) = exp f(z) estimates q(z) / p(z) and the
noise contrastive prior is (sec. 3, the reweighted prior)

    p_NCP(z) = p(z) r(z) / Z,   Z = E_{p(z)}[r(z)]   (= 1 when r = q/p exactly).

Training (one ``harness.train`` run, two phases, as the VQ-VAE's ``prior_start``): steps <
``ncp_start`` train the VAE exactly as ``vae-2d`` would (its own ``training_step``, optimizer and
noise from the same generator: a ``vae-2d`` run of ``ncp_start`` steps with the same seed and batch
size ends with bit-identical weights); later steps freeze the VAE and take one Adam step of the
classifier on the logistic loss softplus(−f(z⁺)) + softplus(f(z⁻)) (means over the batch), with one
posterior code z⁺ = μ(x) + σ(x) ε per training row and as many prior draws z⁻ ~ N(0, I). The
classifier's last layer starts at zero, so r ≡ 1 and the model is exactly its VAE until phase 2.

Sampling (``Sampler``) by sampling-importance-resampling (SIR; Rubin 1988; the paper's sec. 3): per
sample, M = ``sir_proposals`` proposals z_m ~ p(z), one of them chosen with probability
w_m / Σ w, w_m = r(z_m) (inverse CDF at one uniform), then decoded like the VAE's ``sample``
(decoder mean plus σ ε when ``vae.sample_noise``). As M → ∞ the chosen z is distributed as p_NCP;
M = 1 gives the VAE's prior samples back (bit-identically: the same ``rng`` streams). All noise per
example from the ``BatchRNG``: proposals from ``rng.child("latent")``, the uniform from
``rng.child("select")``, decoder noise from ``rng.child("noise")``. Each call stores the mean
effective sample size of its weights, ESS = (Σ w)² / Σ w² ∈ [1, M] (Kish), in ``last_sir_ess``
(and its per-example values in ``last_sir_ess_per_example``); ``sir_ess(n, rng)`` computes it without
decoding. ``self.net`` is the **classifier** (what ``harness.core.nfe`` counts): it is evaluated once
per batch on the n·M proposals, so the recorded NFE per sample is M (the decoder runs once per sample
and is not counted).

Bound (``LowerBound``). With z_i = μ + σ ⊙ ε_i, ε_i ~ N(0, I) from ``rng``:

* k = 1: log p(x|z_1) − KL(q(z|x) ‖ p(z)) + log r(z_1) − log Z, an unbiased one-sample estimate of
  E_q[log p(x|z) + log p(z) + log r(z) − log q(z|x)] − log Z, the ELBO with p_NCP (analytic KL as
  in ``VAE.elbo``);
* k > 1: the IWAE bound with p_NCP, logsumexp_i(log p(x|z_i) + log p(z_i) + log r(z_i) − log q(z_i|x))
  − log k − log Z (Burda et al. 2016, eq. 8).

Both reuse ``VAE.bound_terms`` / ``VAE.combine`` with the same noise as ``VAE.elbo``: with r ≡ 1 and
log Z = 0 they equal the VAE's bounds exactly.

log Z is estimated by Monte Carlo (:func:`estimate_log_normaliser`): log Ẑ = log (1/N) Σ_j r(z_j)
over N = ``num_normaliser_samples`` prior draws from the fixed seed ``normaliser_seed``, with the
delta-method standard error se(log Ẑ) ≈ sd(r) / (√N · mean(r)). It is computed when phase 2 ends
(the config's last step) and cached in buffers (``log_normaliser``, ``log_normaliser_se``) keyed by a
hash of the classifier's weights (``normaliser_key``), so checkpoints carry it and it is recomputed,
identically, whenever the weights differ (an EMA copy, a resumed or re-trained classifier). Ẑ is
unbiased but log Ẑ is biased low (Jensen), by about se²/2, so the reported bound is biased *high*
by about se²/2 nats; and since Z is estimated, the value is an estimate of a lower bound, not a
strict one. ``describe()`` puts log Ẑ and its standard error into the evaluation record.

Units: log-densities and bounds are nats per example, summed over dimensions, shape [B].
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.nets import MLP
from baselines.vae import DEFAULTS as VAE_DEFAULTS
from baselines.vae import VAE, VAEConfig, _bound_noise
from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["REGISTRY", "NCPVAE", "NCPVAEConfig", "classifier_loss", "effective_sample_size",
           "estimate_log_normaliser", "sir", "sir_select"]

LogRatio = Callable[[Tensor], Tensor]  # z [N, Z] -> log r(z) [N]
# VAEConfig fields that belong to the NCP model as a whole (one seed, one training length, one EMA).
_VAE_OWNED_BY_NCP = ("seed", "steps", "batch_size", "ema_decay")
_NORMALISER_CHUNK = 65_536
_VAE_FIELDS = frozenset(f.name for f in fields(VAEConfig))


# --------------------------------------------------------------------------------- pure functions
def effective_sample_size(log_weights: Tensor) -> Tensor:
    """ESS = (Σ_m w_m)² / Σ_m w_m² per row, [B] float64 in [1, M], from unnormalised log w [B, M] (Kish 1965)."""
    lw = log_weights.to(torch.float64)
    return torch.exp(2.0 * torch.logsumexp(lw, dim=-1) - torch.logsumexp(2.0 * lw, dim=-1))


def sir_select(log_weights: Tensor, u: Tensor) -> Tensor:
    """Index [B] (int64) of one of M proposals per row, drawn with probability w_m / Σ w.

    Inverse CDF at u [B] ∈ [0, 1): the first m with cumsum(w)_m > u · Σ w (float64; weights from
    unnormalised log w [B, M], so any additive constant, e.g. log Z, cancels).
    """
    if log_weights.dim() != 2 or u.shape != log_weights.shape[:1]:
        raise ValueError(f"sir_select needs log_weights [B, M] and u [B]; got {list(log_weights.shape)} and {list(u.shape)}")
    w = torch.softmax(log_weights.to(torch.float64), dim=-1)
    cdf = torch.cumsum(w, dim=-1)
    target = (u.to(torch.float64) * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp(max=log_weights.shape[1] - 1)


def sir(log_r: LogRatio, proposals: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Sampling-importance-resampling from p(z) r(z) / Z with proposals z ~ p(z).

    Args:
        log_r: z [N, Z] -> log r(z) [N]; called once, on all B·M proposals.
        proposals: [B, M, Z] draws from p(z).
        u: [B] uniforms on [0, 1) (one per sample).

    Returns:
        (z [B, Z], the chosen proposals; ESS [B] float64 of each row's weights).
    """
    b, m, d = proposals.shape
    log_w = log_r(proposals.reshape(b * m, d)).reshape(b, m)
    idx = sir_select(log_w, u.to(log_w.device))
    chosen = proposals[torch.arange(b, device=proposals.device), idx.to(proposals.device)]
    return chosen, effective_sample_size(log_w)


@torch.no_grad()
def estimate_log_normaliser(log_r: LogRatio, dim: int, *, num_samples: int, seed: int,
                            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """(log Ẑ, se) with Ẑ = (1/N) Σ_j r(z_j), z_j ~ N(0, I_dim), N = ``num_samples`` draws from ``seed``.

    se is the delta-method standard error of log Ẑ: sd(r) / (√N · mean(r)) (sd with N − 1), computed
    stably from r / max r. Ẑ is unbiased for Z = E_p[r]; log Ẑ is biased low by about se²/2.
    The draws are made on the CPU in fixed chunks of ``_NORMALISER_CHUNK`` rows (``torch.randn``'s stream
    depends on the tensor size, so a fixed chunk makes the estimate a function of (seed, N) alone) and
    moved to ``device``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")
    g = torch.Generator().manual_seed(int(seed))
    parts = []
    for start in range(0, num_samples, _NORMALISER_CHUNK):
        z = torch.randn((min(_NORMALISER_CHUNK, num_samples - start), dim), generator=g, dtype=dtype).to(device)
        parts.append(log_r(z).to(torch.float64).cpu())
    lr = torch.cat(parts)
    top = lr.max()
    ratio = torch.exp(lr - top)  # r / max r, in (0, 1]
    mean = ratio.mean()
    log_z = float(top + torch.log(mean))
    se = float(ratio.std(unbiased=True) / (mean * math.sqrt(num_samples)))
    return log_z, se


def classifier_loss(logit: Callable[[Tensor], Tensor], z_pos: Tensor, z_neg: Tensor) -> Tensor:
    """Logistic loss of D = sigmoid(logit): mean softplus(−logit(z⁺)) + mean softplus(logit(z⁻)) (scalar).

    z⁺ [N, Z] (label 1, aggregate posterior) and z⁻ [N', Z] (label 0, prior). With equal class sizes
    its minimiser is logit = log q(z) / p(z), the log density ratio.
    """
    return F.softplus(-logit(z_pos)).mean() + F.softplus(logit(z_neg)).mean()


# --------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class NCPVAEConfig:
    """Hyper-parameters of :class:`NCPVAE` (saved in checkpoints).

    Attributes:
        vae: overrides of the ``vae-2d`` defaults of :class:`baselines.vae.VAEConfig` for the VAE
            (e.g. ``{"latent_dim": 2, "hidden": 128}``; images: ``{"data_shape": [1, 28, 28],
            "likelihood": "bernoulli", ...}``); unknown keys are errors. ``seed``, ``steps``,
            ``batch_size`` and ``ema_decay`` are this config's own and may not appear here.
        ncp_start: first step of phase 2 (the classifier): a number in (0, 1) is a fraction of
            ``steps`` (rounded); a whole number >= 0 is the step itself; it must be below ``steps``.
        classifier_hidden, classifier_depth: width and number of SiLU hidden layers of D's MLP.
        classifier_lr: Adam learning rate of the classifier.
        sir_proposals: M, proposals per sample of SIR (``sample(..., proposals=M)`` overrides it).
        num_normaliser_samples: N prior draws of the log Z estimate; normaliser_seed: their seed.
        batch_size, steps: training defaults (both phases).
        ema_decay: EMA of the weights kept by ``harness.train`` (None: none).
        seed: seeds the VAE's and the classifier's initialisation.
    """

    vae: Mapping[str, Any] = field(default_factory=dict)
    ncp_start: float = 0.5
    classifier_hidden: int = 128
    classifier_depth: int = 3
    classifier_lr: float = 1e-3
    sir_proposals: int = 500
    num_normaliser_samples: int = 100_000
    normaliser_seed: int = 0
    batch_size: int = 256
    steps: int = 6000
    ema_decay: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.vae, Mapping):
            raise ValueError(f"vae must be a mapping of VAEConfig fields, got {type(self.vae).__name__}")
        object.__setattr__(self, "vae", dict(self.vae))
        unknown = sorted(set(self.vae) - _VAE_FIELDS)
        if unknown:
            raise ValueError(f"vae has unknown VAEConfig keys {unknown}; known: {sorted(_VAE_FIELDS - set(_VAE_OWNED_BY_NCP))}")
        owned = sorted(set(self.vae) & set(_VAE_OWNED_BY_NCP))
        if owned:
            raise ValueError(f"vae may not set {owned}: set them on ncp-vae itself ({', '.join(owned)}=...)")
        VAEConfig(**self.vae_config())  # the VAE's own validation, one-line errors
        for name in ("classifier_hidden", "classifier_depth", "sir_proposals", "batch_size", "steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_normaliser_samples < 2:
            raise ValueError(f"num_normaliser_samples must be >= 2 (a standard error needs two), got {self.num_normaliser_samples}")
        if not self.classifier_lr > 0:
            raise ValueError(f"classifier_lr must be > 0, got {self.classifier_lr}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        p = self.ncp_start
        if not (0.0 < p < 1.0 or (p >= 0 and float(p).is_integer())):
            raise ValueError(f"ncp_start={p}: give a fraction of steps in (0, 1) or a whole step number >= 0")
        if self.ncp_start_step >= self.steps:
            raise ValueError(f"ncp_start={p} is step {self.ncp_start_step}, not below steps={self.steps}: the classifier "
                             "would never train; lower ncp_start or raise steps")

    @property
    def ncp_start_step(self) -> int:
        """The first step that trains the classifier (``ncp_start`` resolved against ``steps``)."""
        p = self.ncp_start
        return round(p * self.steps) if 0.0 < p < 1.0 else int(p)

    def vae_config(self) -> dict[str, Any]:
        """The keyword arguments of the inner :class:`baselines.vae.VAE`: ``vae-2d`` defaults, ``vae``, ``seed``."""
        return {**VAE_DEFAULTS["vae-2d"], **self.vae, "seed": self.seed}


# --------------------------------------------------------------------------------- model
class NCPVAE(nn.Module):
    """VAE with a noise contrastive prior (module docstring). ``NCPVAE(**config_fields)``.

    Modules: ``vae`` (:class:`baselines.vae.VAE`), ``net`` (the classifier: z [N, Z] -> logit [N, 1]).
    Buffers: ``log_normaliser``, ``log_normaliser_se`` (float64), ``normaliser_key`` (int64; 0: none).
    """

    def __init__(self, **overrides: Any) -> None:
        super().__init__()
        self.config = cfg = NCPVAEConfig(**overrides)
        self.vae = VAE(**cfg.vae_config())
        latent = self.vae.config.latent_dim
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is restored
            torch.manual_seed(cfg.seed)
            self.net = MLP(latent, 1, hidden=cfg.classifier_hidden, depth=cfg.classifier_depth)
        with torch.no_grad():  # r ≡ 1 until the classifier trains: the model is exactly its VAE
            last = self.net.body[-1]
            last.weight.zero_()
            last.bias.zero_()
        self.register_buffer("log_normaliser", torch.zeros((), dtype=torch.float64))
        self.register_buffer("log_normaliser_se", torch.zeros((), dtype=torch.float64))
        self.register_buffer("normaliser_key", torch.zeros((), dtype=torch.int64))
        self.data_spec: DataSpec = self.vae.data_spec
        self.ema_decay = cfg.ema_decay
        self.default_batch_size = cfg.batch_size
        self.default_steps = cfg.steps
        self.last_sir_ess: float | None = None
        self.last_sir_ess_per_example: Tensor | None = None

    def _device(self) -> torch.device:
        return self.log_normaliser.device

    def _dtype(self) -> torch.dtype:
        return self.vae.encoder.body[0].weight.dtype  # not self.net's: the NFE counter wraps it

    # ----------------------------------------------------------------------------- prior
    def log_r(self, z: Tensor) -> Tensor:
        """log r(z) = logit of D(z), [N] nats, for z [N, Z] (one ``self.net`` call)."""
        return self.net(z.to(device=self._device(), dtype=self._dtype())).squeeze(-1)

    def _classifier_key(self) -> int:
        """A 63-bit hash of the classifier's weights and the estimator's settings (the normaliser cache key)."""
        h = hashlib.sha256(f"{self.config.num_normaliser_samples}/{self.config.normaliser_seed}".encode())
        for name, t in self.net.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return (int.from_bytes(h.digest()[:8], "little") >> 1) or 1

    @torch.no_grad()
    def refresh_normaliser(self, *, force: bool = False) -> tuple[float, float]:
        """(log Ẑ, se), recomputed by :func:`estimate_log_normaliser` unless cached for these weights."""
        key = self._classifier_key()
        if force or int(self.normaliser_key) != key:
            cfg = self.config
            log_z, se = estimate_log_normaliser(self.log_r, self.vae.config.latent_dim,
                                                num_samples=cfg.num_normaliser_samples, seed=cfg.normaliser_seed,
                                                device=self._device(), dtype=self._dtype())
            self.log_normaliser.fill_(log_z)
            self.log_normaliser_se.fill_(se)
            self.normaliser_key.fill_(key)
        return float(self.log_normaliser), float(self.log_normaliser_se)

    def log_prior(self, z: Tensor) -> Tensor:
        """log p_NCP(z) = log N(z; 0, I) + log r(z) − log Ẑ, [N] nats for z [N, Z]."""
        log_z, _ = self.refresh_normaliser()
        log_pz = -0.5 * (z.pow(2) + math.log(2.0 * math.pi)).sum(-1)
        return log_pz + self.log_r(z) - log_z

    # ----------------------------------------------------------------------------- bound
    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """The bound with p_NCP, [B] nats (k = 1 ELBO, k > 1 IWAE; module docstring), noise as ``VAE.elbo``."""
        if num_importance < 1:
            raise ValueError(f"num_importance must be >= 1, got {num_importance}")
        log_z, _ = self.refresh_normaliser()
        k, b, latent = num_importance, x.shape[0], self.vae.config.latent_dim
        eps = _bound_noise(rng, generator, (k, b, latent)).to(self._device())
        terms = self.vae.bound_terms(x, eps)
        z = terms["mean"] + torch.exp(0.5 * terms["logvar"]) * eps  # [k, B, Z], the z of bound_terms
        log_r = self.log_r(z.reshape(k * b, latent)).reshape(k, b)
        if k == 1:
            return VAE.combine(terms, "elbo") + log_r[0] - log_z
        return VAE.combine({**terms, "log_pz": terms["log_pz"] + log_r}, "iwae") - log_z

    def describe(self) -> dict[str, Any]:
        """What the evaluation record should carry: the log Z estimate and the sampler's settings."""
        log_z, se = self.refresh_normaliser()
        return {"log_normaliser": log_z, "log_normaliser_se": se,
                "log_normaliser_estimator": "log of the Monte Carlo mean of r(z), z ~ N(0, I); se by the delta method",
                "num_normaliser_samples": self.config.num_normaliser_samples, "sir_proposals": self.config.sir_proposals,
                "net": "classifier D(z), called on M proposals per sample"}

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[the VAE's Adam (phase 1), the classifier's Adam (phase 2)]."""
        return [*self.vae.configure_optimizers(), torch.optim.Adam(self.net.parameters(), lr=self.config.classifier_lr)]

    def classifier_update(self, z_pos: Tensor, z_neg: Tensor, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One optimizer step of the classifier on :func:`classifier_loss` (z⁺ label 1, z⁻ label 0)."""
        loss = classifier_loss(self.log_r, z_pos, z_neg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"classifier_loss": float(loss.detach())}

    def training_step(self, batch: Tensor, *, step: int, optimizers: list[torch.optim.Optimizer],
                      generator: torch.Generator) -> dict[str, float]:
        """Phase 1 (step < ncp_start): ``VAE.training_step``. Phase 2: one classifier step, VAE frozen.

        Phase 2 draws ε [B, Z] (posterior codes) then z⁻ [B, Z] from ``generator``; at the config's last
        step it also computes and caches log Ẑ.
        """
        cfg = self.config
        if step < cfg.ncp_start_step:
            return {**self.vae.training_step(batch, step=step, optimizers=optimizers[:1], generator=generator), "phase": 1.0}
        latent = self.vae.config.latent_dim
        with torch.no_grad():
            mean, logvar = self.vae.encode(batch)
            eps = torch.randn((batch.shape[0], latent), generator=generator).to(mean.device)
            z_pos = mean + torch.exp(0.5 * logvar) * eps
            z_neg = torch.randn((batch.shape[0], latent), generator=generator).to(mean.device)
        out = self.classifier_update(z_pos, z_neg, optimizers[1])
        if step + 1 == cfg.steps:
            self.refresh_normaliser()
        return {**out, "phase": 2.0}

    # ----------------------------------------------------------------------------- sampling
    def _proposals(self, rng: BatchRNG, m: int) -> tuple[Tensor, Tensor]:
        """Proposals [n, M, Z] from ``rng.child('latent')`` and uniforms [n] from ``rng.child('select')``."""
        proposals = rng.child("latent").normal((m, self.vae.config.latent_dim)).to(self._device())
        return proposals, rng.child("select").uniform(())

    @torch.no_grad()
    def sir_ess(self, n: int, rng: BatchRNG, *, proposals: int | None = None) -> Tensor:
        """Per-sample ESS [n] (float64, in [1, M]) of the SIR weights ``sample(n, rng)`` would use."""
        m = self._check_sampling(n, rng, proposals)
        z, _ = self._proposals(rng, m)
        return effective_sample_size(self.log_r(z.reshape(n * m, -1)).reshape(n, m)).cpu()

    def _check_sampling(self, n: int, rng: BatchRNG, proposals: int | None) -> int:
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")
        m = self.config.sir_proposals if proposals is None else int(proposals)
        if m < 1:
            raise ValueError(f"proposals must be >= 1, got {proposals}")
        return m

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG, *, proposals: int | None = None) -> Tensor:
        """[n, *data_shape] samples: SIR latents (M = ``proposals`` or ``sir_proposals``), decoded by ``VAE.decode_sample``.

        One ``self.net`` call on n·M proposals and one decoder call. Sets ``last_sir_ess`` (mean ESS,
        float) and ``last_sir_ess_per_example`` ([n] float64).
        """
        m = self._check_sampling(n, rng, proposals)
        z_all, u = self._proposals(rng, m)
        z, ess = sir(self.log_r, z_all, u)
        self.last_sir_ess_per_example = ess.cpu()
        self.last_sir_ess = float(ess.mean())
        return self.vae.decode_sample(z, rng)


NCPVAE.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                       default=f.default_factory() if f.default is MISSING else f.default, annotation=f.type)
     for f in fields(NCPVAEConfig)])


REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("ncp-vae", "vae", "baselines.ncp_vae:NCPVAE",
               "NCP-VAE (Aneja et al. 2021): vae-2d trained first, then a classifier D(z) of posterior vs prior codes "
               "reweights the prior, r = D/(1-D); SIR sampling with M proposals (NFE = M classifier calls), "
               "ELBO/IWAE with the NCP prior and a Monte Carlo log Z; rows",
               tiny_config={"vae": {"hidden": 16, "depth": 1}, "classifier_hidden": 8, "classifier_depth": 1,
                            "ncp_start": 2, "steps": 4, "batch_size": 64, "sir_proposals": 8,
                            "num_normaliser_samples": 1000}),
)
