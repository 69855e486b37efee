"""Reference rows of a leaderboard: the data itself and trivial ("chance") samplers.

A claim that model A beats model B means little if both are worse than a sampler that knows only
the data's first two moments, or no better than the data itself. These samplers are trained and
evaluated like every model (``genbench train``, the leaderboard's rows), so their rows sit in the
tables beside the models':

* ``data-sample``: a fresh sample of the data: ``capacity`` training rows, resampled uniformly (the
  training split is independent of the evaluation split). The row every metric's best value is
  read against (a perfect model scores like it, up to sampling noise).
* ``chance-gaussian``: N(μ, Σ) with the training rows' mean and covariance (float64 sums): matches
  the data's first two moments exactly, and so its Fréchet distance, while ignoring all structure;
  its exact ``log_prob`` is the likelihood a model must beat.
* ``chance-uniform``: uniform over the training rows' bounding box.
* ``chance-marginals``: every dimension drawn independently from its empirical marginal (for images
  the per-pixel marginal: each pixel copied from an independently chosen training image).

With ``score_noise_std=σ``, ``data-sample`` and ``chance-gaussian`` also give the score of their
density smoothed by N(0, σ² I) (the Score capability, for the score-matching rows): the Parzen
window of the stored training rows, the exact target of score matching on that training set
(Vincent 2011, sec. 4), and the Gaussian fit's N(μ, Σ + σ² I). Without it they claim no score.

"Training" reads each training row once: give ``steps`` × ``batch_size`` ≥ the training rows (one
epoch; batches are disjoint within an epoch). Nothing is optimised. Sampling is per example:
sample i depends only on its ``BatchRNG`` stream, not on the batch it is drawn in.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from harness.core.entries import ModelEntry
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG

__all__ = ["REGISTRY", "EmpiricalSampler", "GaussianFit", "UniformBox"]


def _score_key(score_noise_std: float | None) -> dict[str, float]:
    """The config entry of ``score_noise_std``: none when unset, so configs without a score stay as they were."""
    return {} if score_noise_std is None else {"score_noise_std": score_noise_std}


class _Reference(nn.Module):
    """Shared plumbing: a data spec from ``shape``, no optimisers, a count of rows seen, no network."""

    nfe_per_sample = 0  # sampling evaluates no network (harness.core.nfe.DECLARED_ATTRIBUTE)

    def __init__(self, shape: list[int] | tuple[int, ...], value_range: tuple[float, float], steps: int,
                 batch_size: int) -> None:
        super().__init__()
        self.data_spec = DataSpec(tuple(shape), "continuous", tuple(value_range))
        self.default_steps = steps
        self.default_batch_size = batch_size
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def _require_data(self) -> None:
        if int(self.seen) < 2:
            raise ValueError(f"{type(self).__name__} has seen {int(self.seen)} training rows; train it first (it needs >= 2)")

    def _check_rng(self, n: int, rng: BatchRNG) -> None:
        if len(rng) != n:
            raise ValueError(f"sample(n={n}, rng) needs a BatchRNG over n examples, got one over {len(rng)}")

    @property
    def score_noise_std(self) -> float:
        """σ of the smoothed density whose score :meth:`score` gives. Absent (AttributeError) unless the
        model was built with ``score_noise_std``, so that only then it claims the Score capability."""
        if self._score_noise_std is None:
            raise AttributeError(f"{type(self).__name__} was built without score_noise_std, so it has no score")
        return self._score_noise_std

    def _set_score_noise_std(self, value: float | None) -> None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"score_noise_std must be a number > 0 (or None: no score), got {value!r}")
        self._score_noise_std = None if value is None else float(value)

    def _clamped(self, x: Tensor) -> Tensor:
        if len(self.data_spec.shape) == 3:  # images: stay in the declared value range
            lo, hi = self.data_spec.value_range
            return x.clamp(lo, hi)
        return x


class EmpiricalSampler(_Reference):
    """Resamples stored training rows: whole rows (``mode="rows"``) or each dimension from its own row
    (``mode="marginals"``, the product of the empirical marginals).

    Args:
        shape: per-example shape ([2], [1, 28, 28]).
        capacity: training rows kept (the first ``capacity`` seen).
        mode: ``"rows"`` or ``"marginals"``.
        value_range: the model-space range of image data ((-1, 1)).
        score_noise_std: σ of the Parzen window whose score :meth:`score` gives (``mode="rows"``), or None.
    """

    def __init__(self, shape: list[int] | tuple[int, ...] = (2,), capacity: int = 10_000,
                 mode: Literal["rows", "marginals"] = "rows", value_range: tuple[float, float] = (-1.0, 1.0),
                 batch_size: int = 500, score_noise_std: float | None = None) -> None:
        if mode not in ("rows", "marginals"):
            raise ValueError(f"mode must be 'rows' or 'marginals', got {mode!r}")
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        super().__init__(shape, value_range, steps=-(-capacity // batch_size), batch_size=batch_size)
        if score_noise_std is not None and mode != "rows":
            raise ValueError("score_noise_std gives the Parzen score of whole training rows; use mode='rows'")
        self._set_score_noise_std(score_noise_std)
        self.config = {"shape": list(shape), "capacity": capacity, "mode": mode, "value_range": list(value_range),
                       "batch_size": batch_size, **_score_key(score_noise_std)}
        self.mode = mode
        self.register_buffer("rows", torch.zeros((capacity, *self.data_spec.shape)))

    def training_step(self, batch: Tensor, *, step: int, optimizers: Any, generator: torch.Generator) -> dict[str, float]:
        start = int(self.seen)
        take = min(len(batch), len(self.rows) - start)
        if take > 0:
            self.rows[start : start + take] = batch[:take].to(self.rows)
            self.seen += take
        return {"rows_stored": float(self.seen)}

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, *shape] rows (or per-dimension values) of the stored training rows, chosen by ``rng``."""
        self._check_rng(n, rng)
        self._require_data()
        m = int(self.seen)
        flat = self.rows[:m].reshape(m, -1)
        if self.mode == "rows":
            pick = rng.randint(m, ()).to(flat.device)
            out = flat[pick]
        else:
            pick = rng.randint(m, (flat.shape[1],)).to(flat.device)  # [n, D]
            out = flat[pick, torch.arange(flat.shape[1], device=flat.device)]
        return self._clamped(out.reshape(n, *self.data_spec.shape).float())

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        """Score [B, D] of the Parzen window (1/m) Σ_i N(x; x_i, σ² I) over the m stored rows:
        Σ_i w_i(x) (x_i − x) / σ², w = softmax_i(−|x − x_i|² / 2σ²), in float64 (returned as x's dtype)."""
        self._require_data()
        sigma = self.score_noise_std
        m = int(self.seen)
        rows = self.rows[:m].reshape(m, -1).to(torch.float64)
        q = x.reshape(len(x), -1).to(rows)
        logits = -0.5 * torch.cdist(q, rows).square() / sigma**2  # [B, m]
        w = torch.softmax(logits, dim=1)
        return ((w @ rows - q) / sigma**2).to(x.dtype).reshape(x.shape)


class _Summary(_Reference):
    """A sampler that keeps a summary of the training rows, read in one epoch.

    Args:
        shape: per-example shape.
        steps, batch_size: the one epoch that reads the training rows.
        value_range: the model-space range of image data.
        score_noise_std: σ of the smoothing whose score a subclass with ``score`` gives, or None.
    """

    def __init__(self, shape: list[int] | tuple[int, ...] = (2,), steps: int = 20, batch_size: int = 500,
                 value_range: tuple[float, float] = (-1.0, 1.0), score_noise_std: float | None = None) -> None:
        super().__init__(shape, value_range, steps=steps, batch_size=batch_size)
        if score_noise_std is not None and not hasattr(type(self), "score"):
            raise ValueError(f"{type(self).__name__} has no score; score_noise_std applies to data-sample and chance-gaussian")
        self._set_score_noise_std(score_noise_std)
        self.config = {"shape": list(shape), "steps": steps, "batch_size": batch_size, "value_range": list(value_range),
                       **_score_key(score_noise_std)}
        self._buffers_for(self.data_spec.num_dims)

    def _buffers_for(self, d: int) -> None:
        """Register the summary's buffers for rows of ``d`` values."""
        raise NotImplementedError


class GaussianFit(_Summary):
    """N(μ, Σ) fitted to the training rows by float64 sums (Σ the maximum-likelihood covariance);
    arguments as :class:`_Summary`."""

    def _buffers_for(self, d: int) -> None:
        self.register_buffer("sum", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("outer", torch.zeros(d, d, dtype=torch.float64))

    def training_step(self, batch: Tensor, *, step: int, optimizers: Any, generator: torch.Generator) -> dict[str, float]:
        x = batch.reshape(len(batch), -1).to(torch.float64)
        self.sum += x.sum(0)
        self.outer += x.T @ x
        self.seen += len(x)
        return {"rows_seen": float(self.seen)}

    def moments(self) -> tuple[Tensor, Tensor]:
        """(mean [D], maximum-likelihood covariance [D, D]), float64."""
        self._require_data()
        n = float(self.seen)
        mean = self.sum / n
        cov = self.outer / n - torch.outer(mean, mean)
        return mean, (cov + cov.T) / 2

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        """log N(x; μ, Σ) in nats, float64 [B], of model-space rows x [B, *shape] (the chance row's
        likelihood: what a model must beat with the data's first two moments known)."""
        mean, cov = self.moments()
        try:
            chol = torch.linalg.cholesky(cov)
        except RuntimeError:
            raise ValueError("the fitted covariance is singular (a constant dimension); the Gaussian has no density "
                             "there, so chance-gaussian scores no likelihood on this data") from None
        z = torch.linalg.solve_triangular(chol, (x.reshape(len(x), -1).to(mean) - mean).T, upper=False)
        d = mean.numel()
        return -0.5 * (z.square().sum(0) + d * math.log(2 * math.pi)) - torch.log(torch.diagonal(chol)).sum()

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        """Score [B, D] of N(μ, Σ + σ² I), the fit smoothed by the noise: −(Σ + σ² I)⁻¹ (x − μ)."""
        mean, cov = self.moments()
        smoothed = cov + self.score_noise_std**2 * torch.eye(len(mean), dtype=cov.dtype, device=cov.device)
        q = x.reshape(len(x), -1).to(mean)
        return (-torch.linalg.solve(smoothed, (q - mean).T).T).to(x.dtype).reshape(x.shape)

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, *shape] draws μ + L z, z ~ N(0, I) from ``rng``, L a square root of Σ (eigendecomposition)."""
        self._check_rng(n, rng)
        mean, cov = self.moments()
        evals, evecs = torch.linalg.eigh(cov)
        root = evecs * evals.clamp_min(0).sqrt()  # root @ root.T = cov (PSD part)
        z = rng.normal((self.data_spec.num_dims,), dtype=torch.float64).to(mean.device)
        x = mean + z @ root.T
        return self._clamped(x.reshape(n, *self.data_spec.shape).float())


class UniformBox(_Summary):
    """Uniform over the training rows' bounding box [min_d, max_d] per dimension; arguments as
    :class:`_Summary`."""

    def _buffers_for(self, d: int) -> None:
        self.register_buffer("low", torch.full((d,), float("inf")))
        self.register_buffer("high", torch.full((d,), float("-inf")))

    def training_step(self, batch: Tensor, *, step: int, optimizers: Any, generator: torch.Generator) -> dict[str, float]:
        x = batch.reshape(len(batch), -1).float()
        self.low.copy_(torch.minimum(self.low, x.min(0).values))
        self.high.copy_(torch.maximum(self.high, x.max(0).values))
        self.seen += len(x)
        return {"rows_seen": float(self.seen)}

    @torch.no_grad()
    def sample(self, n: int, rng: BatchRNG) -> Tensor:
        """[n, *shape] uniform draws over the box, from ``rng``."""
        self._check_rng(n, rng)
        self._require_data()
        u = rng.uniform((self.data_spec.num_dims,)).to(self.low.device)
        return (self.low + u * (self.high - self.low)).reshape(n, *self.data_spec.shape)


_TINY = {"shape": [2], "batch_size": 64}

REGISTRY: tuple[ModelEntry, ...] = (
    ModelEntry("data-sample", "reference", "baselines.reference_samplers:EmpiricalSampler",
               "the data itself: stored training rows resampled (the best value every metric can reach)",
               tiny_config={**_TINY, "capacity": 192}),
    ModelEntry("chance-marginals", "reference", "baselines.reference_samplers:chance_marginals",
               "chance: each dimension (pixel) drawn independently from its empirical marginal",
               tiny_config={**_TINY, "capacity": 192}),
    ModelEntry("chance-gaussian", "reference", "baselines.reference_samplers:GaussianFit",
               "chance: a Gaussian with the training data's mean and covariance (matches its FD by construction)",
               tiny_config={**_TINY, "steps": 3}),
    ModelEntry("chance-uniform", "reference", "baselines.reference_samplers:UniformBox",
               "chance: uniform over the training data's bounding box",
               tiny_config={**_TINY, "steps": 3}),
)


def chance_marginals(shape: list[int] | tuple[int, ...] = (2,), capacity: int = 10_000, mode: str = "marginals",
                     value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 500) -> EmpiricalSampler:
    """An :class:`EmpiricalSampler` in ``mode="marginals"`` (the only mode it accepts)."""
    if mode != "marginals":
        raise ValueError("chance-marginals always samples the marginals; drop mode")
    return EmpiricalSampler(shape=shape, capacity=capacity, mode="marginals", value_range=value_range, batch_size=batch_size)
