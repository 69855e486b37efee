"""``elbo_bpd``: the bits/dim upper bound −ELBO / (D ln 2) of a latent-variable model.

ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) ≤ log p(x) (Kingma & Welling 2014, eq. 3), so the
bits/dim from it upper-bound the model's; the bits/dim convention is that of ``metrics.bpd``.
"""

from __future__ import annotations

from typing import Any

from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    from metrics.likelihood import bound_bpd

    data = inputs.data
    summary = bound_bpd(inputs.model, data.batches, data.spec, num_importance=1, seed=inputs.seed)
    return {"elbo_bpd": MetricEntry.from_summary(summary, data.common(inputs.seed))}


METRIC = Metric(
    name="elbo_bpd",
    keys=(MetricKey("elbo_bpd", "ELBO bits/dim", unit="bits/dim", higher_is_better=False,
                    measured=frozenset({"chunk"})),),
    needs=("model:LowerBound",),
    description="bits/dim upper bound from the ELBO",
    reference="Kingma & Welling 2014, eq. 3",
    compute=_compute,
    uncertainty="per-example",
)
