"""Cost of the exact log-density: examples scored per second and network evaluations per example.

The sampling pass records the other direction (``nfe_mean``, ``samples_per_s`` of ``metrics.nfe``),
so a record of both shows an autoregressive flow's asymmetry: MAF scores an example with L MADE
calls and samples with L·D, IAF the reverse (Papamakarios et al. 2017, sec. 3.2; Kingma et al.
2016, sec. 4). The evaluation examples are put in model space as for ``bpd``
(``metrics.likelihood.model_inputs``: dequantized images), then ``model.log_prob`` is timed batch
by batch, under ``torch.no_grad``, with the network calls counted at ``model.net``
(``harness.core.nfe``) when the model has one.

``log_prob_per_s`` = N / Σ_batches (wall time of ``log_prob``), 1/s, on the run's device and batch
size (recorded); under torchrun each rank times its share of the batches and the times are
summed, so it is one process's throughput. ``log_prob_nfe`` = (examples evaluated by the
network) / N: network calls per scored example. Runs when asked for (``--metrics density_speed``).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from harness.core.distributed import map_shared
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from harness.core.rng import BatchRNG

__all__ = ["METRIC"]


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    from harness.core.nfe import counting
    from metrics.likelihood import indexed_batches, model_inputs

    model, data = inputs.model, inputs.data
    countable = isinstance(getattr(model, "net", None), torch.nn.Module)

    def one(batch: tuple[list[int], torch.Tensor]) -> dict[str, Any]:
        indices, x = batch
        model_x, _, _ = model_inputs(x, data.spec, BatchRNG(inputs.seed, indices))
        model_x = model_x.to(inputs.device)
        with torch.no_grad(), (counting(model) if countable else contextlib.nullcontext()) as count:
            start = time.perf_counter()
            log_p = model.log_prob(model_x)
            log_p.sum().item()  # waits for the device
            wall = time.perf_counter() - start
        return {"n": len(indices), "wall_time_s": wall,
                "forward_calls": count.forward_calls if countable else 0,
                "examples_evaluated": count.examples if countable else 0}

    results = map_shared(one, list(indexed_batches(data.batches)))
    n = sum(r["n"] for r in results)
    if n == 0:
        raise ValueError("no examples to score: the evaluation batches were empty")
    wall = math.fsum(r["wall_time_s"] for r in results)
    batch_size = max(r["n"] for r in results)
    out = {"log_prob_per_s": MetricEntry(n / wall if wall > 0 else math.inf, {
        "n": n, "wall_time_s": round(wall, 4), "batch_size": batch_size, "device": inputs.device,
        "meaning": "evaluation examples scored by model.log_prob per second of its wall time"})}
    if countable:
        calls = sum(r["forward_calls"] for r in results)
        examples = sum(r["examples_evaluated"] for r in results)
        out["log_prob_nfe"] = MetricEntry(examples / n, {
            "n": n, "forward_calls": calls, "examples_evaluated": examples, "batch_size": batch_size,
            "meaning": "forward calls of model.net per scored example"})
    return out


def _nfe_support(model: Any) -> str | None:
    if isinstance(getattr(model, "net", None), torch.nn.Module):
        return None
    return f"{type(model).__name__} has no `net` module to count: only log_prob_per_s is measured"


METRIC = Metric(
    name="density_speed",
    keys=(MetricKey("log_prob_per_s", "scored/s", unit="1/s", higher_is_better=True, gate="none", gate_reason="timing",
                    bounds=(0.0, math.inf), measured=frozenset({"wall_time_s", "device", "batch_size"})),
          MetricKey("log_prob_nfe", "density NFE", higher_is_better=False, gate="exact", bounds=(0.0, math.inf),
                    measured=frozenset({"forward_calls", "examples_evaluated"}))),
    needs=("model:LogLikelihood",),
    description="examples scored by the exact log_prob per second, and network calls per scored example",
    reference="Papamakarios et al. 2017, sec. 3.2 (MAF/IAF cost asymmetry)",
    compute=_compute,
    uncertainty="exact",
    default=False,
    partial_support=_nfe_support,
)
