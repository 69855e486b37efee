"""Network evaluations per sample and sampling throughput, read from the sampling pass.

NFE is known when the model's network is its ``net`` module (counted) or the model declares
``nfe_per_sample`` (``harness.core.nfe.nfe_support``); otherwise only the throughput is recorded.

NFE is counted at the network (``harness.core.nfe``), never by the sampler, so adaptive solvers,
guidance and Hutchinson passes count alike (the EDM convention, Karras et al. 2022, sec. 3).
"""

from __future__ import annotations

import math
from typing import Any

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    sampling = inputs.sampling or {}
    out: dict[str, MetricEntry] = {}
    if "nfe_per_sample" in sampling:
        out["nfe_mean"] = MetricEntry(sampling["nfe_per_sample"], {**sampling["nfe"], "sampler": sampling.get("sampler"),
                                                                   "steps": sampling.get("steps")})
    out["samples_per_s"] = MetricEntry(sampling["samples_per_s"], {
        "device": inputs.device, "batch_size": sampling.get("batch_size"), "wall_time_s": sampling.get("wall_time_s")})
    return out


def _nfe_support(model: Any) -> str | None:
    from harness.core.nfe import nfe_support

    return nfe_support(model)


METRIC = Metric(
    name="nfe",
    keys=(MetricKey("nfe_mean", "sampling NFE", higher_is_better=False, gate="exact", bounds=(0.0, math.inf),
                    measured=frozenset({"forward_calls", "examples_evaluated", "vjp_calls"}),
                    tested=frozenset({"sampler", "steps"})),
          MetricKey("samples_per_s", "samples/s", unit="1/s", higher_is_better=True, gate="none", gate_reason="timing",
                    bounds=(0.0, math.inf),
                    measured=frozenset({"wall_time_s", "device", "batch_size"}))),
    needs=("model:Sampler",),
    description="network evaluations per sample (counted at the network) and sampling throughput",
    reference="Karras et al. 2022 (EDM) NFE conventions",
    compute=_compute,
    uncertainty="exact",
    partial_support=_nfe_support,
)
