"""Likelihood metrics in bits/dim: exact (``LogLikelihood``) and bound (``LowerBound``: ELBO, IWAE).

Every metric reports the mean over the evaluation set and its standard error
(``metrics.bpd.mean_and_stderr``), with the bits/dim conventions of ``metrics.bpd``.

Batches: an iterable of ``(indices, x)`` pairs (global example indices, or the int index of the
batch's first example) or of bare tensors/arrays, numbered consecutively from 0. ``x`` is uint8
images or float data, [B, *shape]. Example i's dequantization noise comes from
``BatchRNG(seed, [i]).child("dequantize")``: the same whatever the batching or sharding, and
shared by every likelihood metric run with that seed.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.core.distributed import map_shared
from harness.core.levels import pixels_to_levels
from harness.core.protocols import DataSpec, LogLikelihood, LowerBound
from harness.core.rng import BatchRNG, example_seed
from harness.core.stats import block_means, mean_and_stderr
from metrics.bpd import dequantization_offset_bits, dequantize, nats_to_bpd

__all__ = ["BOUND_STREAM", "batches_of", "bound_bpd", "chunk_sizes", "combine_iwae_chunks", "exact_bpd",
           "indexed_batches", "model_inputs", "takes_rng"]

Batch = Tensor | np.ndarray | tuple[int | Sequence[int] | Tensor, Tensor | np.ndarray]


def batches_of(x: Tensor | np.ndarray, batch_size: int) -> Iterator[tuple[range, Tensor]]:
    """Split a whole evaluation set [N, ...] into ``(range(i, j), x[i:j])`` batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        yield range(start, stop), torch.as_tensor(x[start:stop])


def indexed_batches(batches: Iterable[Batch]) -> Iterator[tuple[list[int], Tensor]]:
    """Normalise batches to ``(global indices, tensor)``; an int index is the first example's, and
    bare tensors continue the count from the previous batch."""
    next_index = 0
    for batch in batches:
        if isinstance(batch, tuple):
            indices, x = batch
            start = int(indices) if isinstance(indices, (int, np.integer)) else None
            index_list = list(range(start, start + len(x))) if start is not None else [int(i) for i in indices]
        else:
            x = batch
            index_list = list(range(next_index, next_index + len(x)))
        x = torch.as_tensor(x)
        if len(index_list) != x.shape[0]:
            raise ValueError(f"a batch has {x.shape[0]} examples but {len(index_list)} indices")
        next_index = max(index_list, default=next_index - 1) + 1
        yield index_list, x


def model_inputs(x: Tensor, spec: DataSpec, rng: BatchRNG) -> tuple[Tensor, float, dict[str, Any]]:
    """Map a data batch to the model's space.

    Args:
        x: uint8 images or float data, [B, *spec.shape].
        spec: the model's DataSpec.
        rng: per-example randomness for the B examples (dequantization uses ``rng.child("dequantize")``).

    Returns:
        (inputs [B, *spec.shape], offset_bits, protocol fields for the record):

        * uint8 + continuous: uniform dequantization into ``spec.value_range`` (float32; Theis et
          al. 2016, sec. 3.1), offset ``dequantization_offset_bits(value_range)``;
        * uint8 + discrete with 256 categories: integer levels (int64), offset 0;
        * uint8 + discrete with 2 categories: ``pixel >= 128`` (int64 0/1), offset 0;
        * float + continuous: as is, offset 0.

    Raises:
        ValueError: a shape that is not ``spec.shape`` per example, or any other data/spec pairing.
    """
    if tuple(x.shape[1:]) != spec.shape:
        raise ValueError(f"data has per-example shape {tuple(x.shape[1:])} but the model's DataSpec expects "
                         f"{spec.shape}; evaluate the model on data of its own shape")
    if len(rng) != x.shape[0]:
        raise ValueError(f"rng covers {len(rng)} examples but the batch has {x.shape[0]}")
    if x.dtype == torch.uint8:
        if spec.kind == "continuous":
            noise = rng.child("dequantize").uniform(spec.shape).to(x.device)
            fields = {"dequantization": "uniform: y = lo + (v + u)(hi - lo)/256, u ~ U[0,1) per value, seeded per example",
                      "value_range": list(spec.value_range)}
            return dequantize(x, noise, spec.value_range), dequantization_offset_bits(spec.value_range), fields
        if spec.num_categories == 256:
            return x.long(), 0.0, {"dequantization": "none: integer levels 0..255"}
        if spec.num_categories == 2:
            return (x >= 128).long(), 0.0, {"dequantization": "none: binarized at 128 (pixel >= 128 -> 1)"}
        levels = spec.num_categories
        return pixels_to_levels(x, levels), 0.0, {
            "dequantization": f"none: {levels} grey levels, level = round(pixel * {levels - 1} / 255)"}
    if x.is_floating_point():
        if spec.kind == "continuous":
            return x, 0.0, {"dequantization": "none: continuous data scored as is"}
        raise ValueError(f"cannot score float data with a discrete model ({spec.num_categories} categories); give it "
                         "integer data (uint8 images) or use a model with a continuous DataSpec")
    raise ValueError(f"unsupported data dtype {x.dtype}: expected uint8 images or float data")


def _score_all(score: Callable[[Tensor, list[int]], Tensor], batches: Iterable[Batch], spec: DataSpec, *, seed: int,
               device: str | torch.device | None) -> tuple[Tensor, float, dict[str, Any]]:
    """Run ``score(inputs, indices) -> [B] nats`` over all batches; return (log p [N] float64, offset, fields).

    Inputs go to ``device``, or stay on the batch's device when it is None.
    """
    def one(batch: tuple[list[int], Tensor]) -> tuple[Tensor, float, dict[str, Any]]:
        indices, x = batch
        inputs, offset, fields = model_inputs(x, spec, BatchRNG(seed, indices))
        with torch.no_grad():
            out = score(inputs if device is None else inputs.to(device), indices)
        if tuple(out.shape) != (len(indices),):
            raise ValueError(f"the model returned shape {tuple(out.shape)} for a batch of {len(indices)}; "
                             "log-likelihoods must be [B] nats, summed over dimensions")
        return out.detach().to("cpu", torch.float64), offset, fields

    # under torchrun each rank scores its share of the batches; every rank gets all results in order
    results = map_shared(one, list(indexed_batches(batches)))
    if not results:
        raise ValueError("no examples to evaluate: the batches were empty")
    values = [r[0] for r in results]
    _, offset, fields = results[-1]
    log_p = torch.cat(values)
    bad = ~torch.isfinite(log_p)
    if bad.any():
        raise ValueError(f"the model returned NaN or Inf for {int(bad.sum())} of {log_p.numel()} examples; no value is "
                         "reported. Check for data outside the model's support or numerical overflow")
    return log_p, offset, fields


def _summary(log_p: Tensor, spec: DataSpec, offset: float, fields: dict[str, Any]) -> dict[str, Any]:
    bpd = nats_to_bpd(log_p, spec.num_dims, offset_bits=offset)
    value, stderr = mean_and_stderr(bpd)
    return {"value": value, "stderr": stderr, "n": int(log_p.numel()), "block_means": block_means(bpd), **fields,
            "offset_bits": offset}


def exact_bpd(model: LogLikelihood, batches: Iterable[Batch], spec: DataSpec, *, seed: int,
              device: str | torch.device | None = None) -> dict[str, Any]:
    """Bits/dim of an exact likelihood model over the evaluation set.

    bpd_i = −log p(x_i) / (D ln 2) + offset (``metrics.bpd``), mean and standard error over i.

    Returns:
        ``{"metric": "bpd", "value", "stderr", "n", "block_means", "estimator": "exact", "dequantization",
        ["value_range"], "offset_bits"}``.

    Raises:
        ValueError: non-finite log-likelihoods (with their count), wrong shapes, empty input.
    """
    log_p, offset, fields = _score_all(lambda x, _: model.log_prob(x), batches, spec, seed=seed, device=device)
    return {"metric": "bpd", "estimator": "exact", **_summary(log_p, spec, offset, fields)}


def chunk_sizes(num_importance: int, chunk: int) -> list[int]:
    """Split k importance samples into chunks of ``chunk`` (a remainder of 1 joins the last chunk).

    No chunk of size 1 is made when k > 1: a model may compute ``elbo(x, num_importance=1)``
    with an analytic KL, which is not the single-sample log-weight the combination needs.
    """
    if num_importance < 1 or chunk < 2:
        raise ValueError(f"need num_importance >= 1 and chunk >= 2, got {num_importance} and {chunk}")
    full, rest = divmod(num_importance, chunk)
    if full == 0:
        return [rest]
    sizes = [chunk] * full
    if rest == 1:
        sizes[-1] += 1
    elif rest:
        sizes.append(rest)
    return sizes


def combine_iwae_chunks(bounds: Tensor, sizes: Sequence[int]) -> Tensor:
    """Exact IWAE_k from independent chunk bounds IWAE_{n_j}^(j): [m, B] -> [B] float64 nats.

    Proof. Chunk j holds n_j of the k = Σ_j n_j weights w_i = p(x, z_i)/q(z_i|x) and reports
    IWAE_{n_j}^(j) = log((1/n_j) Σ_{i∈j} w_i) (Burda et al. 2016, eq. 8), so Σ_{i∈j} w_i =
    n_j exp(IWAE_{n_j}^(j)). Hence

        IWAE_k = log((1/k) Σ_i w_i) = logsumexp_j(IWAE_{n_j}^(j) + log n_j) − log k,

    which for equal chunks (k = m·c) is logsumexp_j(IWAE_c^(j)) − log(k/c). All z_i are
    independent draws from q, so this is the same random variable as one k-sample bound.
    """
    n = torch.as_tensor(list(sizes), dtype=torch.float64)
    if bounds.shape[0] != n.numel():
        raise ValueError(f"got {bounds.shape[0]} chunk bounds for {n.numel()} chunk sizes")
    return torch.logsumexp(bounds.to(torch.float64) + n.log().unsqueeze(-1), dim=0) - math.log(float(n.sum()))


BOUND_STREAM = "bound"
"""Stream of the bound's noise: chunk j of example i draws from ``BatchRNG(seed, [i], stream="bound").child(f"chunk{j}")``."""


def takes_rng(model: LowerBound) -> bool:
    """Whether ``model.elbo`` has a parameter named ``rng`` (the per-example ``BatchRNG`` of the protocol).

    A bare ``**kwargs`` does not count: a wrapper that forwards it to an old-signature model would
    fail, and one that drops it would silently use its own noise.
    """
    try:
        parameters = inspect.signature(model.elbo).parameters
    except (TypeError, ValueError):
        return False
    param = parameters.get("rng")
    return param is not None and param.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def bound_bpd(model: LowerBound, batches: Iterable[Batch], spec: DataSpec, *, num_importance: int, chunk: int = 100,
              seed: int, device: str | torch.device | None = None) -> dict[str, Any]:
    """Bits/dim from the ELBO (k = 1, ``elbo_bpd``) or the IWAE bound L_k (k > 1, ``iwae_bpd``).

    Since L_k ≤ log p(x), the result is an upper bound on the model's bits/dim (Burda et al. 2016,
    Theorem 1: L_k rises with k to log p(x)). The IWAE paper reports L_5000 (sec. 5.1). For
    k > ``chunk`` the model is called on chunks of ``chunk`` samples and the chunk bounds are
    combined exactly by :func:`combine_iwae_chunks` (chunks of at most ``chunk + 1``, see
    :func:`chunk_sizes`), so memory stays that of one chunk. k = 1 is whatever the model's ELBO is
    (single-sample or analytic KL).

    Randomness. A model whose ``elbo`` takes ``rng`` (:func:`takes_rng`) gets, for chunk j, the
    per-example ``BatchRNG(seed, indices, stream="bound").child(f"chunk{j}")``: example i's noise,
    and so its bound, is the same whatever batch or shard it is in (up to the floating-point
    effect of the batch size on the network's arithmetic). A model with the older signature
    ``elbo(x, *, num_importance=1)`` is called as before: its noise comes from the global torch RNG,
    reseeded before each batch with ``example_seed(seed, first index of the batch, "bound")``; a
    run is bit-reproducible and shards agree, but the per-example values depend on the batch
    composition (a batch draws one noise tensor for all its examples), which the entry records
    in ``bound_noise``. Either way the global RNG is used inside ``torch.random.fork_rng``, so the
    caller's RNG state is restored afterwards.

    Returns:
        ``{"metric": "elbo_bpd" | "iwae_bpd", "value", "stderr", "n", "block_means", "estimator": "elbo" | "iwae",
        "num_importance", "chunk", "bound_noise", "dequantization", ["value_range"], "offset_bits"}``.
    """
    sizes = chunk_sizes(num_importance, chunk)
    per_example = takes_rng(model)

    def score(x: Tensor, indices: list[int]) -> Tensor:
        if per_example:
            rng = BatchRNG(seed, indices, stream=BOUND_STREAM)
            bounds = torch.stack([model.elbo(x, num_importance=n, rng=rng.child(f"chunk{j}")).to(torch.float64)
                                  for j, n in enumerate(sizes)])
        else:
            torch.manual_seed(example_seed(seed, indices[0], BOUND_STREAM))
            bounds = torch.stack([model.elbo(x, num_importance=n).to(torch.float64) for n in sizes])
        return bounds[0] if len(sizes) == 1 else combine_iwae_chunks(bounds, sizes)

    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices):
        log_p, offset, fields = _score_all(score, batches, spec, seed=seed, device=device)
    estimator = "elbo" if num_importance == 1 else "iwae"
    noise = ('per example: chunk j of example i from BatchRNG(seed, [i], stream="bound").child("chunk<j>")'
             if per_example else
             "depends on batch composition: the model's elbo takes no rng, so its noise is drawn from the global "
             'torch RNG reseeded per batch with example_seed(seed, first index of the batch, "bound")')
    return {"metric": f"{estimator}_bpd", "estimator": estimator, "num_importance": num_importance, "chunk": chunk,
            "bound_noise": noise, **_summary(log_p, spec, offset, fields)}
