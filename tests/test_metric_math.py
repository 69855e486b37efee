"""Metric math against closed forms and the reference implementations (torch-fidelity, prdc)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import prdc
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from metrics.fid import GaussianStats, fid_from_features, frechet_distance, trace_sqrt_product
from metrics.inception_score import inception_score
from metrics.kid import kernel_inception_distance
from metrics.prdc import compute_prdc, compute_prdc_multi_k, knn_radii


def _gaussian_pair(d: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two d-dim Gaussians with non-diagonal, well-conditioned covariances."""
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    return (
        rng.standard_normal(d),
        a @ a.T / d + 0.1 * np.eye(d),
        rng.standard_normal(d) + 0.5,
        b @ b.T / d + 0.2 * np.eye(d),
    )


def _analytic_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Dowson & Landau closed form written independently with scipy's general sqrtm."""
    root1 = scipy.linalg.sqrtm(s1).real
    cross = scipy.linalg.sqrtm(root1 @ s2 @ root1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def _pytorch_fid_style(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """pytorch-fid / TTUR: trace of sqrtm(Σ1 Σ2), real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _prdc_reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        return {key: float(v) for key, v in prdc.compute_prdc(real, fake, nearest_k=k).items()}


# ---------------------------------------------------------------- FID


def test_frechet_distance_matches_closed_form() -> None:
    mu1, s1, mu2, s2 = _gaussian_pair()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_analytic_fd(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)


def test_fid_of_samples_converges_to_analytic_value() -> None:
    mu1, s1, mu2, s2 = _gaussian_pair()
    exact = _analytic_fd(mu1, s1, mu2, s2)
    rng = np.random.default_rng(0)
    errors = {}
    for n in (1_000, 100_000):
        x = rng.multivariate_normal(mu1, s1, size=n)
        y = rng.multivariate_normal(mu2, s2, size=n)
        errors[n] = abs(fid_from_features(x, y) - exact)
    # The leading fluctuation of the plug-in FID is the linear mean term 2δᵀ(μ̂1 − μ1 − μ̂2 + μ2),
    # δ = μ1 − μ2, with std 2·sqrt(δᵀ(Σ1 + Σ2)δ / N) (0.045 at N = 1e5 here; 0.044 measured over
    # 30 seeds); covariance fluctuations and the O((tr Σ1 + tr Σ2)/N) bias are smaller. 4 std:
    delta = mu1 - mu2
    assert errors[100_000] < 4 * 2 * np.sqrt(delta @ (s1 + s2) @ delta / 100_000)
    assert errors[100_000] < errors[1_000] / 3


@pytest.mark.parametrize("n, d", [(500, 16), (32, 64)])  # full rank and rank-deficient (N < d)
def test_fid_of_identical_sets_is_zero(n: int, d: int) -> None:
    x = np.random.default_rng(1).standard_normal((n, d))
    assert abs(fid_from_features(x, x)) < 1e-8
    stats = GaussianStats().update(x)
    assert abs(trace_sqrt_product(stats.cov, stats.cov) - np.trace(stats.cov)) < 1e-9


def test_frechet_distance_is_symmetric() -> None:
    mu1, s1, mu2, s2 = _gaussian_pair(d=12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


@pytest.mark.parametrize("n", [500, 40])  # d = 64: full rank, and rank-deficient (N < d)
def test_fid_matches_torch_fidelity_and_pytorch_fid(n: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, 64)) * rng.uniform(0.5, 2.0, 64)
    y = rng.standard_normal((n, 64)) + 0.3
    ref_a = fid_features_to_statistics(torch.from_numpy(x))
    ref_b = fid_features_to_statistics(torch.from_numpy(y))
    reference = fid_statistics_to_metric(ref_a, ref_b, verbose=False)["frechet_inception_distance"]
    stats_a, stats_b = GaussianStats().update(x), GaussianStats().update(y)
    ours = frechet_distance(stats_a.mean, stats_a.cov, stats_b.mean, stats_b.cov)
    assert ours == pytest.approx(reference, rel=1e-6)
    assert ours == pytest.approx(_pytorch_fid_style(ref_a["mu"], ref_a["sigma"], ref_b["mu"], ref_b["sigma"]), rel=1e-6)


def test_frechet_distance_validates_inputs() -> None:
    mu1, s1, mu2, s2 = _gaussian_pair()
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu1, s1, mu2, s2[:-1])
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(mu1, s1, mu2[:-1], s2[:-1, :-1])
    bad = s1.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="sigma1 contains NaN"):
        frechet_distance(mu1, bad, mu2, s2)
    with pytest.raises(ValueError, match="mu2 contains NaN"):
        frechet_distance(mu1, s1, np.full_like(mu2, np.inf), s2)


# ---------------------------------------------------------------- GaussianStats


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 60),
    d=st.integers(1, 6),
    cuts=st.lists(st.integers(1, 59), max_size=6),
    offset=st.sampled_from([0.0, 1e4]),
)
def test_gaussian_stats_independent_of_batching(seed: int, n: int, d: int, cuts: list[int], offset: float) -> None:
    x = np.random.default_rng(seed).standard_normal((n, d)) + offset
    bounds = [0, *sorted({c for c in cuts if c < n}), n]
    streamed = GaussianStats()
    shards = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        streamed.update(x[lo:hi])
        shards.append(GaussianStats().update(x[lo:hi]))
    merged = shards[0]
    for shard in shards[1:]:
        merged = merged.merge(shard)
    expected_cov = np.cov(x, rowvar=False, ddof=1).reshape(d, d)
    for stats in (streamed, merged):
        assert stats.n == n
        # Means can be ~0: bound the error by the data's scale, not by the mean itself.
        np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-13, atol=1e-14 * (1.0 + offset))
        np.testing.assert_allclose(stats.cov, expected_cov, rtol=1e-10, atol=1e-10 * np.abs(expected_cov).max())


def test_gaussian_stats_large_offset_and_torch_input() -> None:
    x = np.random.default_rng(3).standard_normal((2_000, 16)).astype(np.float32) + np.float32(1e4)
    stats = GaussianStats()
    for batch in torch.from_numpy(x).split(128):
        stats.update(batch)
    expected = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats.cov, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(axis=0), rtol=1e-13)


def test_gaussian_stats_roundtrip_and_errors() -> None:
    x = np.random.default_rng(4).standard_normal((50, 5))
    stats = GaussianStats().update(x)
    buffer = io.BytesIO()
    np.savez(buffer, **stats.to_dict())
    buffer.seek(0)
    restored = GaussianStats.from_dict(np.load(buffer))
    assert restored.n == 50
    np.testing.assert_array_equal(restored.cov, stats.cov)
    with pytest.raises(ValueError, match="at least 2"):
        _ = GaussianStats().update(x[:1]).cov
    with pytest.raises(ValueError, match="dim"):
        stats.update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        GaussianStats().update(np.full((3, 5), np.nan))


# ---------------------------------------------------------------- KID


@pytest.mark.parametrize("route", ["whole-set kernels", "per-subset kernels"])
def test_kid_matches_torch_fidelity(route: str, monkeypatch) -> None:
    import metrics.kid

    if route == "per-subset kernels":
        monkeypatch.setattr(metrics.kid, "WHOLE_KERNEL_ENTRIES", 0)
    rng = np.random.default_rng(5)
    gen = rng.standard_normal((300, 32)).astype(np.float32)  # ours upcasts each subset
    real = rng.standard_normal((260, 32)) * 1.2 + 0.1
    reference = kid_features_to_metric(
        torch.from_numpy(gen.astype(np.float64)),  # torch-fidelity's kernels run in the input dtype
        torch.from_numpy(real),
        kid_subsets=20,
        kid_subset_size=100,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
        rng_seed=123,
        verbose=False,
    )
    mean, std = kernel_inception_distance(gen, real, num_subsets=20, subset_size=100, seed=123)
    whole = metrics.kid._whole_kernels(gen, real, 20, 100, 3, 1 / 32, 1.0)
    assert (whole is not None) == (route == "whole-set kernels")  # the route under test is the one taken
    assert mean == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(reference["kernel_inception_distance_std"], rel=1e-6)


def test_kid_of_identical_distributions_is_near_zero() -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((1_000, 16)).astype(np.float32)
    b = rng.standard_normal((1_000, 16)).astype(np.float32)
    mean, std = kernel_inception_distance(a, b, num_subsets=30, subset_size=150)
    assert abs(mean) < 3 * std


def test_kid_validates_inputs() -> None:
    a = np.zeros((50, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"at least subset_size=100.*lower `subset_size` to at most 50"):
        kernel_inception_distance(a, np.zeros((80, 4)), subset_size=100)
    with pytest.raises(ValueError, match="dims differ"):
        kernel_inception_distance(a, np.zeros((50, 3)), subset_size=10)


# ---------------------------------------------------------------- Inception Score


@pytest.mark.parametrize("n, shuffle", [(1_000, True), (1_003, False)])
def test_inception_score_matches_torch_fidelity(n: int, shuffle: bool) -> None:
    logits = np.random.default_rng(7).standard_normal((n, 20)) * 3.0
    reference = isc_features_to_metric(torch.from_numpy(logits).float(), splits=10, shuffle=shuffle, rng_seed=7)
    mean, std = inception_score(logits.astype(np.float32), splits=10, seed=7, shuffle=shuffle)
    assert mean == pytest.approx(reference["inception_score_mean"], rel=1e-6)
    assert std == pytest.approx(reference["inception_score_std"], rel=1e-6)


def test_inception_score_extremes() -> None:
    uniform_mean, uniform_std = inception_score(np.full((100, 10), 2.5))
    assert uniform_mean == pytest.approx(1.0, abs=1e-12) and uniform_std < 1e-12
    num_classes, splits = 10, 5
    labels = np.arange(num_classes * splits * 3) % num_classes  # every split holds each class 3 times
    confident = 1_000.0 * np.eye(num_classes)[labels]  # softmax underflows to an exact one-hot
    mean, std = inception_score(confident, splits=splits, shuffle=False)
    assert mean == pytest.approx(num_classes, rel=1e-12) and std < 1e-12


def test_inception_score_needs_splits_samples() -> None:
    with pytest.raises(ValueError, match="at least splits=10"):
        inception_score(np.zeros((9, 4)), splits=10)


# ---------------------------------------------------------------- PRDC

PRDC_CASES = [  # (seed, d, k, chunk_size, offset, dtype)
    (0, 2, 3, 37, 0.0, np.float32),
    (1, 2, 5, 2048, 0.0, np.float32),
    (2, 64, 3, 2048, 0.0, np.float32),
    (3, 64, 5, 37, 0.0, np.float32),
    (4, 64, 5, 128, 0.0, np.float64),
    # |x| >> nearest-neighbour distances, as with Inception features: float32 matmul-based
    # distances (torch.cdist's default) flip strict comparisons here and miss by ~6e-4.
    (5, 64, 5, 2048, 10.0, np.float32),
    (6, 2, 3, 100, 0.0, np.float32),
]


@pytest.mark.parametrize("seed, d, k, chunk_size, offset, dtype", PRDC_CASES)
def test_prdc_matches_reference_package(
    seed: int, d: int, k: int, chunk_size: int, offset: float, dtype: type[np.floating]
) -> None:
    rng = np.random.default_rng(seed)
    real = (rng.standard_normal((400, d)) + offset).astype(dtype)
    fake = (rng.standard_normal((330, d)) * 1.1 + 0.15 + offset).astype(dtype)
    ours = compute_prdc(real, fake, nearest_k=k, chunk_size=chunk_size)
    reference = _prdc_reference(real, fake, k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key


def test_prdc_multi_k_equals_separate_runs() -> None:
    rng = np.random.default_rng(8)
    real = rng.standard_normal((300, 8)).astype(np.float32)
    fake = rng.standard_normal((320, 8)).astype(np.float32) * 0.9
    multi = compute_prdc_multi_k(real, fake, pr_k=3, dc_k=5, chunk_size=64)
    at3, at5 = compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)
    assert (multi["precision"], multi["recall"]) == (at3["precision"], at3["recall"])
    assert (multi["density"], multi["coverage"]) == (at5["density"], at5["coverage"])


def test_knn_radii_match_brute_force() -> None:
    x = np.random.default_rng(9).standard_normal((150, 6))
    full = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    expected = np.sort(full, axis=1)[:, 4]  # index 0 is the self-distance
    np.testing.assert_allclose(knn_radii(x, 4, chunk_size=7).numpy(), expected, rtol=1e-12)


def test_prdc_identical_and_disjoint_sets() -> None:
    x = np.random.default_rng(10).standard_normal((200, 16)).astype(np.float32)
    same = compute_prdc(x, x.copy(), nearest_k=5, chunk_size=50)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = compute_prdc(x, x + 1_000.0, nearest_k=5, chunk_size=50)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_validates_inputs() -> None:
    x = np.zeros((20, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 6 real and 4 fake"):
        compute_prdc_multi_k(x[:5], x, pr_k=3, dc_k=5)
    with pytest.raises(ValueError, match="dims differ"):
        compute_prdc(x, np.zeros((20, 3)))
    with pytest.raises(ValueError, match="fake_features contains NaN"):
        compute_prdc(x, np.full((20, 4), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        compute_prdc(x, np.zeros(20))


def test_trace_sqrt_uses_cholesky_for_full_rank_and_eigh_for_rank_deficient_covariances() -> None:
    """Any factors F Fᵀ = Σ give the same nuclear norm: the Cholesky route (full rank, ~n³/3 per
    factor) equals the eigh route to 1e-12, and a rank-deficient Σ (N < d) still takes eigh, whose
    clipped eigenvalues keep FD(x, x) at rounding level."""
    from metrics import fid

    rng = np.random.default_rng(0)
    d = 64
    s1 = np.cov(rng.normal(size=(500, d)), rowvar=False)
    s2 = np.cov(rng.normal(size=(500, d)) @ (np.eye(d) + 0.1 * rng.normal(size=(d, d))), rowvar=False)
    assert np.allclose(fid._psd_factor(s1), np.linalg.cholesky(s1))  # full rank: the Cholesky factor
    eigh_factor = lambda s: (lambda w, v: v * np.sqrt(np.clip(w, 0, None)))(*np.linalg.eigh(s))  # noqa: E731
    by_eigh = float(np.linalg.svd(eigh_factor(s2).T @ eigh_factor(s1), compute_uv=False).sum())
    assert fid.trace_sqrt_product(s1, s2) == pytest.approx(by_eigh, rel=1e-12)
    x = rng.normal(size=(20, d))  # N < d: singular covariance
    s = np.cov(x, rowvar=False)
    assert not np.allclose(fid._psd_factor(s), np.tril(fid._psd_factor(s)))  # not a triangular (Cholesky) factor
    assert abs(fid.frechet_distance(x.mean(0), s, x.mean(0), s)) < 1e-10
