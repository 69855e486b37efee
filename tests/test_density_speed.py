"""density_speed: the cost of the exact log_prob, the counterpart of the sampling pass's NFE and throughput."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def _eval(model: str, metrics: tuple[str, ...], **model_args):
    from harness.runner import ModelEvalConfig, evaluate_model

    config = ModelEvalConfig(dataset="gaussian-4-test", model=model, model_args=tuple(model_args.items()),
                             metrics=metrics, num_samples=120, batch_size=50, device="cpu")
    return evaluate_model(config, progress=False)["metrics"]


@pytest.mark.parametrize("model,density_nfe,sample_nfe", [("maf", 3, 12), ("iaf", 12, 3)])
def test_autoregressive_flows_show_their_asymmetry_in_network_calls(model, density_nfe, sample_nfe):
    """L = 3 layers on D = 4 values: MAF scores in L MADE calls and samples in L·D, IAF the reverse."""
    m = _eval(model, ("density_speed", "nfe", "bpd"), shape=[4], num_layers=3, hidden=8)
    assert m["log_prob_nfe"]["value"] == density_nfe and m["nfe_mean"]["value"] == sample_nfe
    speed = m["log_prob_per_s"]
    assert speed["n"] == m["bpd"]["n"] and speed["batch_size"] == 50 and speed["device"] == "cpu"
    assert speed["value"] == pytest.approx(speed["n"] / speed["wall_time_s"], rel=0.05)  # wall time is rounded
    assert m["log_prob_nfe"]["forward_calls"] == density_nfe * -(-speed["n"] // 50)  # per batch


def test_it_runs_only_when_asked_and_needs_an_exact_density():
    from harness.planner import plan_model_metrics
    from harness.models import build_registered

    flow = build_registered("maf", {"shape": [4]})
    assert "density_speed" not in [m.name for m in plan_model_metrics(None, flow)[0]]
    assert "density_speed" in [m.name for m in plan_model_metrics(("density_speed",), flow)[0]]
    ode_flow = build_registered("fm-ot", {"shape": [4]})  # a density only through the PF-ODE
    with pytest.raises(TypeError, match="density_speed.*needs a model implementing LogLikelihood"):
        plan_model_metrics(("density_speed",), ode_flow)
    closed_form = build_registered("affine-flow", {"dim": 4})  # exact log_prob, but no network to count
    with pytest.raises(TypeError, match="no `net` module to count"):
        plan_model_metrics(("density_speed",), closed_form)
