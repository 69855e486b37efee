"""Active latent units of a VAE encoder: Burda et al.'s variance criterion and the KL-per-dim count.

Active units (Burda et al. 2016, sec. 5.2): unit u is active when
A_u = Cov_x(E_{q(u|x)}[u]) ≥ 10⁻², the variance over the data of the posterior *mean* (never of
sampled z). The choices, against the two reference implementations (Burda's Theano code,
yburda/iwae, and jxhe/vae-lagging-encoder):

* set: the whole evaluation split, as jxhe/vae-lagging-encoder ``calc_au`` (Burda's Theano code
  uses one minibatch of 500 training examples);
* ddof = 1 (the sample variance Σ(μ − μ̄)²/(N − 1)), as ``calc_au``, the reference whose set we
  match and the version later PyTorch code copies; Burda's ``np.var`` is ddof = 0 (pass ``ddof=0``;
  the two differ by a factor N/(N − 1));
* comparison ``≥`` threshold, as both codes (the paper's text says ">"; they differ only on ties).

Active dims by KL: dim d is active when the mean over the set of
KL(q(z_d|x) ‖ N(0, 1)) = ½(μ_d² + σ_d² − log σ_d² − 1) nats exceeds 0.1 (strict ``>``).

Hierarchical VAEs need Burda's per-layer definition; :func:`encoder_active_units` covers the
single Gaussian layer of the ``Encoder`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.core.distributed import map_shared
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from harness.core.protocols import DataSpec, Encoder
from harness.core.rng import BatchRNG
from metrics.likelihood import Batch, indexed_batches, model_inputs

__all__ = ["METRIC", "RunningMoments", "active_units", "encoder_active_units", "kl_active_dims", "kl_per_dim"]

AU_THRESHOLD = 1e-2
KL_THRESHOLD = 0.1
DEFAULT_DDOF = 1


def _matrix(values: Tensor | np.ndarray, name: str) -> Tensor:
    """[N, Z] float64 CPU tensor, finite, or a ValueError naming ``name``."""
    t = torch.as_tensor(values).detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must be [N, Z] (one row per example), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(t)).sum())} NaN or Inf entries")
    return t


def _au_record(variances: Tensor, n: int, threshold: float, ddof: int) -> dict[str, Any]:
    return {"count": int((variances >= threshold).sum()), "variances": variances.tolist(), "threshold": threshold,
            "ddof": ddof, "n": n}


def _kl_record(kl_mean: Tensor, n: int, threshold: float) -> dict[str, Any]:
    return {"count": int((kl_mean > threshold).sum()), "kl_per_dim": kl_mean.tolist(), "threshold": threshold, "n": n}


def _check_ddof(n: int, ddof: int) -> None:
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (Burda's np.var) or 1 (calc_au), got {ddof}")
    if n - ddof < 1:
        raise ValueError(f"need more than {ddof} examples for a ddof={ddof} variance, got {n}")


def active_units(means: Tensor | np.ndarray, *, threshold: float = AU_THRESHOLD, ddof: int = DEFAULT_DDOF) -> dict[str, Any]:
    """Burda's active units from all posterior means [N, Z] at once.

    Returns:
        ``{"count", "variances" (Z floats), "threshold", "ddof", "n"}``; a unit counts when its
        variance is ≥ ``threshold``.
    """
    mu = _matrix(means, "means")
    _check_ddof(mu.shape[0], ddof)
    return _au_record(mu.var(dim=0, correction=ddof), mu.shape[0], threshold, ddof)


def kl_per_dim(means: Tensor, logvars: Tensor) -> Tensor:
    """KL(N(μ, e^{logvar}) ‖ N(0, 1)) per example and dim, [N, Z] nats (Kingma & Welling 2014, app. B)."""
    return 0.5 * (means.pow(2) + logvars.exp() - logvars - 1.0)


def kl_active_dims(means: Tensor | np.ndarray, logvars: Tensor | np.ndarray, *,
                   threshold: float = KL_THRESHOLD) -> dict[str, Any]:
    """Dims whose mean KL over the set exceeds ``threshold`` nats, from [N, Z] means and log-variances.

    Returns:
        ``{"count", "kl_per_dim" (Z floats, nats), "threshold", "n"}``.
    """
    mu, logvar = _matrix(means, "means"), _matrix(logvars, "logvars")
    if mu.shape != logvar.shape:
        raise ValueError(f"means {tuple(mu.shape)} and logvars {tuple(logvar.shape)} must have the same shape")
    return _kl_record(kl_per_dim(mu, logvar).mean(0), mu.shape[0], threshold)


class RunningMoments:
    """Streaming float64 count, mean and M2 = Σ(x − mean)² per column, merged batch by batch.

    Chan, Golub & LeVeque 1979 pairwise update: with δ = mean_b − mean_a and n = n_a + n_b,
    mean = mean_a + δ n_b/n and M2 = M2_a + M2_b + δ² n_a n_b / n. Exact up to rounding and
    independent of how the rows are split into batches.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, rows: Tensor) -> None:
        """Add rows [B, Z] (any float dtype; accumulated in float64)."""
        rows = rows.to(torch.float64)
        n_b = rows.shape[0]
        if n_b == 0:
            return
        mean_b = rows.mean(0)
        m2_b = (rows - mean_b).pow(2).sum(0)
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * n_b / n)
        self.n = n

    def variance(self, ddof: int) -> Tensor:
        """M2 / (n − ddof) per column."""
        if self.m2 is None:
            raise ValueError("no rows were added")
        _check_ddof(self.n, ddof)
        return self.m2 / (self.n - ddof)


def encoder_active_units(model: Encoder, batches: Iterable[Batch], *, spec: DataSpec | None = None, seed: int = 0,
                         threshold: float = AU_THRESHOLD, kl_threshold: float = KL_THRESHOLD,
                         ddof: int = DEFAULT_DDOF, device: str | torch.device | None = None) -> dict[str, Any]:
    """Both counts for an encoder, streaming over the evaluation set (posterior means are not kept).

    Args:
        model: ``encode(x) -> (mean [B, Z], logvar [B, Z])``.
        batches: as for ``metrics.likelihood`` (``(indices, x)`` pairs or bare tensors).
        spec: when given, raw data is mapped with ``metrics.likelihood.model_inputs`` (the same
            seeded dequantization as the likelihood metrics); when None, batches are model inputs.
        seed: dequantization seed (used only with ``spec``).
        device: where to move each batch; None keeps it where it is.

    Returns:
        ``{"active_units": active_units-style dict, "kl_active_dims": kl_active_dims-style dict, "n"}``.
    """
    def encode(batch: tuple[list[int], Tensor]) -> tuple[Tensor, Tensor]:
        indices, x = batch
        if spec is not None:
            x, _, _ = model_inputs(x, spec, BatchRNG(seed, indices))
        with torch.no_grad():
            mean, logvar = model.encode(x if device is None else x.to(device))
        mean, logvar = _matrix(mean, "encoder means"), _matrix(logvar, "encoder logvars")
        if mean.shape != logvar.shape or mean.shape[0] != len(indices):
            raise ValueError(f"encode() of a batch of {len(indices)} returned mean {tuple(mean.shape)} and logvar "
                             f"{tuple(logvar.shape)}; both must be [B, Z]")
        return mean.detach().cpu(), logvar.detach().cpu()

    moments, kl_sum = RunningMoments(), torch.zeros((), dtype=torch.float64)
    # under torchrun each rank encodes its share of the batches; the moments stream over all of them in order
    for mean, logvar in map_shared(encode, list(indexed_batches(batches))):
        moments.update(mean)
        kl_sum = kl_sum + kl_per_dim(mean, logvar).sum(0)
    if moments.n == 0:
        raise ValueError("no examples to evaluate: the batches were empty")
    return {"active_units": _au_record(moments.variance(ddof), moments.n, threshold, ddof),
            "kl_active_dims": _kl_record(kl_sum / moments.n, moments.n, threshold=kl_threshold), "n": moments.n}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    data = inputs.data
    au = encoder_active_units(inputs.model, data.batches, spec=data.spec, seed=inputs.seed)
    common = data.common(inputs.seed)
    return {key: MetricEntry(au[key]["count"], {**au[key], **common}) for key in ("active_units", "kl_active_dims")}


METRIC = Metric(
    name="active_units",
    keys=(MetricKey("active_units", "active units", gate="exact", measured=frozenset({"count", "variances"}),
                    seed_dependent=True),
          MetricKey("kl_active_dims", "active dims (KL>0.1)", gate="exact", measured=frozenset({"count", "kl_per_dim"}),
                    seed_dependent=True)),
    needs=("model:Encoder",),
    description="latent units with Var_x E[z|x] > 1e-2, and dims with mean KL > 0.1",
    reference="Burda et al. 2016, sec. 5.2",
    compute=_compute,
    uncertainty="exact",
)
