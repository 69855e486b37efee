"""Reconstruction error of an autoencoder, and the code usage of a discrete one.

The evaluation examples are put in model space as for the bounds (``metrics.likelihood.model_inputs``:
8-bit images uniformly dequantized with per-example noise), reconstructed by ``model.reconstruct``
(the decoder's mean at the encoder's code) and compared value by value:

* ``recon_mse`` = (1/N) Σ_i (1/D) |x̂_i − x_i|², the mean squared error per value in model-space
  units² (images in (0, 1)), with its per-example standard error and block means;
* ``code_perplexity`` = exp(H(usage)), H the entropy in nats of how often each code index is chosen
  over all positions of all evaluation examples (van den Oord et al. 2017 report codebook usage;
  perplexity K means every code is used equally, 1 that one code is): for models that expose
  ``codes(x) -> int64 [B, ...]`` and ``num_codes`` (a VQ-VAE's nearest codes).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.core.distributed import map_shared
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from harness.core.rng import BatchRNG
from harness.core.stats import block_means

__all__ = ["METRIC", "perplexity_of_counts"]


def perplexity_of_counts(counts: torch.Tensor) -> float:
    """exp(−Σ_k p_k log p_k) of usage counts [K] (p_k = counts_k / Σ counts; 0 log 0 = 0)."""
    counts = counts.to(torch.float64)
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("no codes were counted")
    p = counts[counts > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _has_codes(model: Any) -> bool:
    return callable(getattr(model, "codes", None)) and isinstance(getattr(model, "num_codes", None), int)


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    from metrics.likelihood import indexed_batches, model_inputs

    model, data = inputs.model, inputs.data
    with_codes = _has_codes(model)

    def one(batch: tuple[list[int], torch.Tensor]) -> dict[str, Any]:
        indices, x = batch
        model_x, _, fields = model_inputs(x, data.spec, BatchRNG(inputs.seed, indices))
        model_x = model_x.to(inputs.device)
        with torch.no_grad():
            recon = model.reconstruct(model_x)
            sq = (recon.to(torch.float64) - model_x.to(torch.float64)).square().flatten(1).mean(1)
            counts = (torch.bincount(model.codes(model_x).reshape(-1).cpu(), minlength=model.num_codes)
                      if with_codes else None)
        return {"indices": indices, "sq": sq.cpu(), "counts": counts, "fields": fields}

    results = map_shared(one, list(indexed_batches(data.batches)))
    if not results:
        raise ValueError("no examples to reconstruct: the evaluation batches were empty")
    order = sorted(range(len(results)), key=lambda r: results[r]["indices"][0])
    sq = torch.cat([results[r]["sq"] for r in order])
    n = len(sq)
    common = {**data.common(inputs.seed), **results[0]["fields"]}
    out = {"recon_mse": MetricEntry(float(sq.mean()), {
        **common, "stderr": float(sq.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan,
        "block_means": block_means(sq), "estimator": "mean over examples of the mean squared error per value"})}
    if with_codes:
        counts = torch.stack([r["counts"] for r in results]).sum(0)
        out["code_perplexity"] = MetricEntry(perplexity_of_counts(counts), {
            **common, "num_codes": int(model.num_codes), "codes_counted": int(counts.sum()),
            "codes_used": int((counts > 0).sum()), "estimator": "exp(entropy of the code usage over all positions)"})
    return out


def _codes_support(model: Any) -> str | None:
    if _has_codes(model):
        return None
    return f"{type(model).__name__} has no discrete codes (codes(x), num_codes): only recon_mse is measured"


METRIC = Metric(
    name="reconstruction",
    keys=(MetricKey("recon_mse", "recon. MSE", higher_is_better=False, bounds=(0.0, math.inf)),
          MetricKey("code_perplexity", "code perplexity", higher_is_better=None, gate="none",
                    gate_reason="a usage statistic without a recorded spread", bounds=(1.0, math.inf),
                    measured=frozenset({"codes_counted", "codes_used"}))),
    needs=("model:Reconstructor",),
    description="mean squared reconstruction error per value, and the code perplexity of a discrete autoencoder",
    reference="van den Oord et al. 2017, sec. 4 (reconstructions, codebook usage)",
    compute=_compute,
    uncertainty="per-example",
    default=False,
    partial_support=_codes_support,
)
