"""Metrics that see the structure of the 2-D toys: closed forms, and the cases the Fréchet
distance on raw coordinates cannot see (a Gaussian with the data's covariance, uniform noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.core.densities import (
    CHECKERBOARD_ENTROPY_BPD,
    EIGHT_GAUSSIANS,
    TWENTYFIVE_GAUSSIANS,
    checkerboard_log_prob,
    gaussian_density,
    mixture_entropy_bpd,
)
from harness.core.metric import MetricInputs
from harness.core.options import MetricOptions
from harness.datasets.toys import load_toy
from harness.planner import compute_metrics, metric_named
from metrics.data_xent import data_cross_entropy_bpd
from metrics.mmd import mmd2_unbiased
from metrics.modes import mode_metrics
from metrics.sliced_wasserstein import sliced_wasserstein2, wasserstein2_1d_squared

N = 1000


def _scored(fake: np.ndarray, real: np.ndarray, meta, names: tuple[str, ...], seed: int = 0) -> dict:
    inputs = MetricInputs(seed=seed, fake_features=fake.astype(np.float32), real_features=real.astype(np.float32),
                          samples=fake, mixture=meta.mixture, log_density=meta.log_density,
                          feature_extractor="identity", feature_dim=fake.shape[1])
    entries, _ = compute_metrics([metric_named(n) for n in names], inputs, MetricOptions(), replicates=10)
    return entries


def _candidates(toy: str) -> tuple[dict[str, np.ndarray], np.ndarray, object]:
    """Perfect samples, the covariance-matched Gaussian and uniform noise on the data's box, with the reference."""
    real = load_toy(toy, "test", num_samples=N)
    train = load_toy(toy, "train", num_samples=20_000).x.astype(np.float64)
    rng = np.random.default_rng(7)
    blob = rng.multivariate_normal(train.mean(0), np.cov(train, rowvar=False), size=N)
    lo, hi = train.min(0), train.max(0)
    uniform = lo + (hi - lo) * rng.random((N, 2))
    perfect = load_toy(toy, "train", num_samples=N, seed=11).x.astype(np.float64)
    return {"perfect": perfect, "blob": blob, "uniform": uniform}, real.x, real.meta


@pytest.mark.parametrize("toy", ["8gaussians", "25gaussians"])
def test_fd_on_raw_coordinates_cannot_see_the_modes(toy):
    """The blind case: FD does not rank perfect samples above the covariance-matched Gaussian by more
    than its spread (the criterion the structure metrics below meet)."""
    sets, real, meta = _candidates(toy)
    fd = {k: _scored(v, real, meta, ("fid",))["fid"] for k, v in sets.items()}
    gap = fd["blob"]["value"] - fd["perfect"]["value"]
    spread = math.hypot(fd["blob"]["uncertainty"]["std"], fd["perfect"]["uncertainty"]["std"])
    assert gap < 3 * spread, (fd["blob"]["value"], fd["perfect"]["value"], spread)


@pytest.mark.parametrize("toy", ["8gaussians", "25gaussians"])
@pytest.mark.parametrize("key,metric,better", [
    ("mmd2", "mmd", "lower"), ("sw2", "sw2", "lower"), ("data_xent_bpd", "data_xent", "lower"),
    ("modes_covered_share", "modes", "higher"),
])
def test_structure_metrics_rank_perfect_samples_first_by_more_than_their_spread(toy, key, metric, better):
    sets, real, meta = _candidates(toy)
    scores = {k: _scored(v, real, meta, (metric,))[key] for k, v in sets.items()}
    perfect = scores["perfect"]
    for other in ("blob", "uniform"):
        entry = scores[other]
        sign = 1 if better == "lower" else -1
        gap = sign * (entry["value"] - perfect["value"])
        spread = math.hypot(perfect.get("uncertainty", {}).get("std", 0.0), entry.get("uncertainty", {}).get("std", 0.0))
        assert gap > 3 * spread, (other, key, perfect["value"], entry["value"], spread)
        assert gap > 0


def test_coverage_among_high_quality_samples_is_not_fooled_by_uniform_noise():
    """The old count (one sample within 3σ) credits uniform noise with about half the grid."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-5, 5, size=(N, 2))
    out = mode_metrics(noise, TWENTYFIVE_GAUSSIANS)
    assert out["modes_covered"]["value"] >= 8
    assert out["modes_covered_share"]["value"] == 0
    perfect = load_toy("25gaussians", "train", num_samples=N, seed=3).x
    assert mode_metrics(perfect, TWENTYFIVE_GAUSSIANS)["modes_covered_share"]["value"] == 25
    collapsed = perfect[np.isin(np.argmin(((perfect[:, None] - TWENTYFIVE_GAUSSIANS.centers) ** 2).sum(-1), 1), [0, 1, 2])]
    assert mode_metrics(collapsed, TWENTYFIVE_GAUSSIANS)["modes_covered_share"]["value"] == 3


def _gauss_kernel_mean(delta: np.ndarray, var: float, bandwidth: float) -> float:
    """E exp(-||Z||² / (2 s²)) for Z ~ N(delta, var I_d)."""
    d = len(delta)
    return (bandwidth**2 / (bandwidth**2 + var)) ** (d / 2) * math.exp(-delta @ delta / (2 * (bandwidth**2 + var)))


def test_mmd2_matches_the_closed_form_for_isotropic_gaussians_and_is_unbiased():
    d, s, shift = 3, 1.0, np.array([0.5, 0.0, 0.0])
    bandwidths = (2.0, 0.5)
    truth = float(np.mean([2 * _gauss_kernel_mean(np.zeros(d), 2 * s**2, b) - 2 * _gauss_kernel_mean(shift, 2 * s**2, b)
                           for b in bandwidths]))
    rng = np.random.default_rng(0)
    diff, same = [], []
    for _ in range(20):
        x, y, z = rng.normal(size=(300, d)), rng.normal(size=(300, d)) + shift, rng.normal(size=(300, d))
        diff.append(mmd2_unbiased(x, y, bandwidths))
        same.append(mmd2_unbiased(x, z, bandwidths))
    se = np.std(diff, ddof=1) / math.sqrt(len(diff))
    assert abs(np.mean(diff) - truth) < 4 * se
    assert abs(np.mean(same)) < 4 * np.std(same, ddof=1) / math.sqrt(len(same))
    assert min(same) < 0 < truth  # unbiased: it goes below 0 when P = Q


def test_mmd2_equals_the_u_statistic_by_enumeration():
    rng = np.random.default_rng(1)
    x, y, bw = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), (0.7, 3.0)

    def k(a, b):
        return np.mean([math.exp(-((a - b) ** 2).sum() / (2 * s**2)) for s in bw])

    kxx = np.mean([k(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    kyy = np.mean([k(y[i], y[j]) for i in range(4) for j in range(4) if i != j])
    kxy = np.mean([k(a, b) for a in x for b in y])
    assert mmd2_unbiased(x, y, bw) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)


def test_sw2_of_a_translation_is_the_shift_over_root_d():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    t = np.array([1.0, -2.0, 0.5, 0.0])
    value, mc_se = sliced_wasserstein2(x, x + t, num_projections=4096, seed=0)
    assert abs(value**2 - (t @ t) / 4) < 4 * mc_se
    assert sliced_wasserstein2(x, x, num_projections=8, seed=0)[0] == 0.0


def test_1d_w2_of_unequal_sets_is_exact():
    a = np.array([[0.0], [1.0]])
    b = np.array([[0.0], [0.5], [1.0]])
    assert wasserstein2_1d_squared(a, b)[0] == pytest.approx(1 / 12, abs=1e-15)
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    # repeating every row leaves the empirical distribution, hence W2, unchanged
    assert np.allclose(wasserstein2_1d_squared(u, v), wasserstein2_1d_squared(np.repeat(u, 2, 0), v), atol=1e-12)
    assert np.allclose(wasserstein2_1d_squared(u[:5], v), ((np.sort(u[:5], 0) - np.sort(v, 0)) ** 2).mean(0))


def test_cross_entropy_of_data_samples_is_the_entropy():
    g = gaussian_density(3)
    x = g.sample(20_000, 0).astype(np.float64)
    mean, se, outside = data_cross_entropy_bpd(x, g.log_prob)
    entropy_bpd = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * g.cov)[1] / (3 * math.log(2))
    assert outside == 0 and abs(mean - entropy_bpd) < 4 * se
    for toy, mixture in (("8gaussians", EIGHT_GAUSSIANS), ("25gaussians", TWENTYFIVE_GAUSSIANS)):
        data = load_toy(toy, "test", num_samples=20_000)
        mean, se, _ = data_cross_entropy_bpd(data.x, data.meta.log_density)
        assert abs(mean - mixture_entropy_bpd(mixture)) < 4 * se
    board = load_toy("checkerboard", "test", num_samples=5000)
    mean, se, outside = data_cross_entropy_bpd(board.x, board.meta.log_density)
    assert outside == 0 and mean == pytest.approx(CHECKERBOARD_ENTROPY_BPD, abs=1e-12)


def test_samples_outside_the_checkerboard_make_the_cross_entropy_infinite_with_the_count():
    board = load_toy("checkerboard", "test", num_samples=100)
    x = np.concatenate([board.x, [[1.0, 3.0], [5.0, 0.0]]])  # square (0, 1) is empty; (5, 0) is off the board
    assert checkerboard_log_prob(np.array([[1.0, 3.0], [1.0, 1.0]]))[1] == -math.log(32)
    fake = x.astype(np.float32)
    out = _scored(fake.astype(np.float64), board.x, board.meta, ("data_xent",))
    assert out["data_xent_bpd"]["value"] is None
    assert "2 of 102 samples" in out["data_xent_bpd"]["value_reason"]
    assert out["data_support_fraction"]["value"] == pytest.approx(100 / 102)


def test_samples_all_outside_the_checkerboard_give_a_strict_json_entry():
    """With no sample inside the squares there is no standard error either: stored as None, not NaN, so
    the record stays strict JSON (a suite run once stopped on exactly this)."""
    import json

    board = load_toy("checkerboard", "test", num_samples=100)
    off = np.full((50, 2), 9.0) + np.arange(50)[:, None] * 0.01
    out = _scored(off, board.x, board.meta, ("data_xent",))
    assert out["data_xent_bpd"]["value"] is None and out["data_xent_bpd"]["stderr"] is None
    assert out["data_support_fraction"]["value"] == 0.0
    json.dumps(out, allow_nan=False)


def test_a_non_finite_field_of_a_metric_entry_is_stored_as_none():
    from harness.core.metric import MetricEntry

    entry = MetricEntry(1.5, {"stderr": float("nan"), "n": 3, "spread": float("inf")}).to_json()
    assert entry == {"value": 1.5, "stderr": None, "n": 3, "spread": None}
