"""Energy distance (metrics/energy.py): closed forms on Gaussians, the estimator, and the pipeline."""

import math

import numpy as np
import pytest
from scipy.special import gammaln, hyp1f1

from harness.core.metric import MetricInputs
from harness.core.options import MetricOptions
from harness.planner import compute_metrics, metric_named
from metrics.energy import energy_distance, mean_pairwise_distance

pytestmark = pytest.mark.usefixtures("one_thread")


def expected_norm(mean: np.ndarray, s: float) -> float:
    """E||Z|| for Z ~ N(mean, s^2 I_d): s sqrt(2) Γ((d+1)/2)/Γ(d/2) 1F1(-1/2; d/2; -λ²/2), λ = ||mean||/s."""
    d = len(mean)
    lam2 = float(mean @ mean) / s**2
    return s * math.sqrt(2) * math.exp(gammaln((d + 1) / 2) - gammaln(d / 2)) * hyp1f1(-0.5, d / 2, -lam2 / 2)


def gaussian_energy(mu1, s1, mu2, s2) -> float:
    """E(P, Q) of N(mu1, s1² I) and N(mu2, s2² I): 2E||X-Y|| - E||X-X'|| - E||Y-Y'||."""
    zero = np.zeros_like(mu1)
    return (2 * expected_norm(mu1 - mu2, math.sqrt(s1**2 + s2**2)) - expected_norm(zero, math.sqrt(2) * s1)
            - expected_norm(zero, math.sqrt(2) * s2))


def test_expected_norm_closed_form_in_one_dimension():
    # E|Z| for Z ~ N(m, s²) = s sqrt(2/π) exp(-m²/2s²) + m (1 - 2Φ(-m/s))
    from scipy.stats import norm

    m, s = 0.7, 1.3
    direct = s * math.sqrt(2 / math.pi) * math.exp(-m**2 / (2 * s**2)) + m * (1 - 2 * norm.cdf(-m / s))
    assert expected_norm(np.array([m]), s) == pytest.approx(direct, rel=1e-12)


def test_identical_sets_give_about_zero_and_the_estimator_is_unbiased():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    # the same rows on both sides: between-set mean includes the n zero self-distances
    same = energy_distance(x, x)
    assert same == pytest.approx(-2 * mean_pairwise_distance(x) / len(x), rel=1e-9)
    # equal distributions: the U-statistic estimate averages to 0 (unbiased); 200 draws of n = 50
    draws = [energy_distance(rng.standard_normal((50, 2)), rng.standard_normal((50, 2))) for _ in range(200)]
    assert abs(np.mean(draws)) < 3 * np.std(draws) / math.sqrt(len(draws))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_two_gaussians_converge_to_the_analytic_value(d):
    rng = np.random.default_rng(d)
    mu1, mu2, s1, s2 = np.zeros(d), np.full(d, 0.8 / math.sqrt(d)), 1.0, 1.5
    truth = gaussian_energy(mu1, s1, mu2, s2)
    errors = []
    for n in (200, 3200):
        est = [energy_distance(mu1 + s1 * rng.standard_normal((n, d)), mu2 + s2 * rng.standard_normal((n, d)))
               for _ in range(4)]
        errors.append(abs(np.mean(est) - truth))
    assert truth > 0.05
    assert errors[1] < 0.02 * truth + 1e-3  # close at n = 3200
    assert errors[1] < errors[0] or errors[0] < 0.005 * truth  # and closer as n grows


def test_distance_tiles_do_not_change_the_value(monkeypatch):
    import metrics.energy as energy

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((300, 4)), rng.standard_normal((250, 4)) + 0.5
    whole = energy.energy_distance(x, y)
    monkeypatch.setattr(energy, "TILE_ROWS", 7)
    assert energy.energy_distance(x, y) == pytest.approx(whole, rel=1e-12)


def test_energy_runs_through_the_registry_with_half_sample_replicates():
    rng = np.random.default_rng(4)
    fake, real = rng.standard_normal((300, 2)) + 0.3, rng.standard_normal((300, 2))
    inputs = MetricInputs(seed=0, fake_features=fake, real_features=real, feature_extractor="identity", feature_dim=2)
    metric = metric_named("energy")
    assert metric.sample_only and not metric.default  # O(n²): runs only when asked for
    entries, skipped = compute_metrics([metric], inputs, MetricOptions(), replicates=10)
    entry = entries["energy_distance"]
    assert not skipped and entry["value"] == pytest.approx(energy_distance(fake, real))
    unc = entry["uncertainty"]
    assert unc["num_replicates"] == 10 and len(unc["replicates"]) == 10 and unc["std"] > 0
    # the half-sample standard error is of the order of the seed-to-seed spread of the estimate
    spread = np.std([energy_distance(rng.standard_normal((300, 2)) + 0.3, rng.standard_normal((300, 2)))
                     for _ in range(40)], ddof=1)
    assert 0.4 * spread < unc["std"] < 2.5 * spread
