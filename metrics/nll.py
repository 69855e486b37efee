"""``bpd``: negative log-likelihood in bits/dim, exact or by the probability-flow ODE.

A model with an exact ``log_prob`` (``LogLikelihood``) is scored exactly (``metrics.likelihood``);
otherwise a ``ProbabilityFlow`` is integrated from data to prior with the instantaneous
change-of-variables formula (Chen et al. 2018, Theorem 1; Song et al. 2021, App. D.2), its
divergence exact or by Hutchinson's estimator (``metrics.likelihood_ode``). The bits/dim
convention (dequantization offset) is that of ``metrics.bpd``.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.core.distributed import map_shared
from harness.core.heartbeat import progress
from harness.core.metric import Metric, MetricEntry, MetricInputs, MetricKey
from harness.core.protocols import LogLikelihood
from harness.core.rng import BatchRNG
from harness.core.stats import block_means, mean_and_stderr


def _ode(inputs: MetricInputs, options: Any) -> dict[str, Any]:
    from metrics.likelihood import model_inputs
    from metrics.likelihood_ode import ODELikelihoodConfig, ode_bpd

    o = options.model
    config = ODELikelihoodConfig(divergence=o.ode_divergence, probe=o.ode_probe, num_probes=o.ode_num_probes,
                                 solver=o.ode_solver, rtol=o.ode_rtol, atol=o.ode_atol, steps=o.ode_steps)
    data = inputs.data

    def solve(batch: tuple[int, torch.Tensor]) -> dict[str, Any]:
        lo, x = batch
        rng = BatchRNG(inputs.seed, range(lo, lo + len(x)), device=inputs.device)
        model_x, offset, fields = model_inputs(x, data.spec, rng)
        bpd, result = ode_bpd(inputs.model, model_x, config=config, rng=rng, offset_bits=offset)
        return {"bpd": bpd.cpu(), "nfe": result.nfe.cpu(), "forward_calls": result.forward_calls,
                "vjp_calls": result.vjp_calls, "protocol": result.protocol(), "offset": offset, "fields": fields}

    # under torchrun each rank solves its share of the batches; every rank gets all results in order
    results = map_shared(solve, data.batches, wrap=lambda positions: progress(
        positions, total=len(positions), desc="PF-ODE likelihood", bar=inputs.progress))
    values, nfes = [r["bpd"] for r in results], [r["nfe"] for r in results]
    forward_calls, vjp_calls = sum(r["forward_calls"] for r in results), sum(r["vjp_calls"] for r in results)
    protocol, offset, fields = results[-1]["protocol"], results[-1]["offset"], results[-1]["fields"]
    per_example = torch.cat(values)
    mean, stderr = mean_and_stderr(per_example)
    nfe = torch.cat(nfes).to(torch.float64)
    protocol.update(forward_calls=forward_calls, vjp_calls=vjp_calls)
    return {"value": mean, "stderr": stderr, "block_means": block_means(per_example), **protocol, **fields,
            "offset_bits": offset, "nfe_mean": float(nfe.mean()), "nfe_max": int(nfe.max())}


def _compute(inputs: MetricInputs, options: Any) -> dict[str, MetricEntry]:
    from metrics import likelihood

    data = inputs.data
    if isinstance(inputs.model, LogLikelihood):
        summary = likelihood.exact_bpd(inputs.model, data.batches, data.spec, seed=inputs.seed)
    else:
        summary = _ode(inputs, options)
    return {"bpd": MetricEntry.from_summary(summary, data.common(inputs.seed))}


METRIC = Metric(
    name="bpd",
    keys=(MetricKey("bpd", "bits/dim", unit="bits/dim", higher_is_better=False,
                    measured=frozenset({"forward_calls", "vjp_calls", "nfe_mean", "nfe_max", "library"})),),
    needs=("model:LogLikelihood|ProbabilityFlow",),
    description="bits/dim: exact log-likelihood, or the probability-flow ODE with exact/Hutchinson divergence",
    reference="Dinh et al. 2017; Song et al. 2021, App. D.2",
    compute=_compute,
    settings=("ode_divergence", "ode_probe", "ode_num_probes", "ode_solver", "ode_rtol", "ode_atol", "ode_steps"),
    uncertainty="per-example",
)
