"""``iwae_bpd``: the bits/dim upper bound from the k-sample importance-weighted bound L_k.

L_k = E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)] ≤ log p(x), rising with k to log p(x) (Burda et al.
2016, eq. 8 and Theorem 1); k is recorded. The bits/dim convention is that of ``metrics.bpd``.
"""

from __future__ import annotations

from typing import Any

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    from metrics.likelihood import bound_bpd

    data = inputs.data
    summary = bound_bpd(inputs.model, data.batches, data.spec, num_importance=options.model.num_importance,
                        chunk=options.model.importance_chunk, seed=inputs.seed)
    return {"iwae_bpd": MetricEntry.from_summary(summary, data.common(inputs.seed))}


METRIC = Metric(
    name="iwae_bpd",
    keys=(MetricKey("iwae_bpd", "IWAE bits/dim", unit="bits/dim", higher_is_better=False,
                    measured=frozenset({"chunk"})),),
    needs=("model:LowerBound+importance",),
    description="bits/dim upper bound from the k-sample importance-weighted bound (k recorded)",
    reference="Burda et al. 2016, eq. 8",
    compute=_compute,
    settings=("num_importance",),
    uncertainty="per-example",
)
