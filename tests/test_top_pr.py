"""TopP&R (Kim et al. 2023): the authors' top-pr package on the same features, limiting cases, and
the paper's robustness claim (outliers move TopP less than k-NN precision)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
import torch

from harness.cli import main
from metrics.top_pr import MIN_SAMPLES, cosine_kde, metric_seeds, top_pr


@contextlib.contextmanager
def _package_globals():
    """top-pr seeds numpy, torch and cuDNN globally (its ``Fix_seed``): put them back afterwards."""
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    hashseed = os.environ.get("PYTHONHASHSEED")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if hashseed is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = hashseed


def _sets(seed: int, n: int, m: int, d: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = (rng.normal(size=(m, d)) + shift).astype(np.float32)
    return real, fake


@pytest.mark.parametrize(("n", "m", "d", "shift"), [(600, 500, 64, 0.5), (500, 450, 2048, 0.05), (400, 350, 10, 0.7)])
def test_top_pr_equals_the_top_pr_package(n, m, d, shift):
    """d > 32: the package projects after torch.manual_seed(99) and bootstraps after np.random.seed(42),
    so projection_seed=99, bootstrap_seed=42 reproduce it. d <= 32: it does not seed; seeding numpy
    with s before the call is bootstrap_seed=s."""
    package = pytest.importorskip("top_pr")
    real, fake = _sets(d, n, m, d, shift)
    bootstrap_seed = 42 if d > 32 else 7
    with _package_globals():
        np.random.seed(bootstrap_seed)  # no effect for d > 32: the package reseeds with 42 itself
        ref = package.compute_top_pr(real_features=real, fake_features=fake)
    ours = top_pr(real, fake, projection_seed=99, bootstrap_seed=bootstrap_seed)
    assert ours.projected == (d > 32) and ours.dim == min(d, 32)
    assert abs(ours.precision - ref["fidelity"]) <= 1e-6
    assert abs(ours.recall - ref["diversity"]) <= 1e-6
    assert abs(ours.f1 - ref["Top_F1"]) <= 1e-6
    assert 0.0 < min(ours.precision, ours.recall) and min(ours.precision, ours.recall) < 1.0  # not a saturated case


def test_band_equals_the_package_band_up_to_its_kernel_constant():
    """The package's confband_est, same rows, bandwidth and resamples: c_pkg = c · (π / (4h))^d."""
    package = pytest.importorskip("top_pr")
    real, fake = _sets(1, 300, 300, 6, 0.3)
    ours = top_pr(real, fake, projection_seed=0, bootstrap_seed=5)
    with _package_globals():
        np.random.seed(5)  # the real set is bootstrapped first, from the start of the stream
        c_pkg = package.top_pr.confband_est(real, ours.bandwidth_real, p_val=False)
    assert c_pkg == pytest.approx(ours.band_real * (math.pi / (4 * ours.bandwidth_real)) ** 6, rel=1e-5)


def test_limiting_cases():
    real, fake = _sets(2, 400, 400, 8, 0.0)
    # disjoint, far-apart sets: no row of either lies in the other's support
    far = top_pr(real, real + 1e3, projection_seed=0, bootstrap_seed=0)
    assert (far.precision, far.recall, far.f1) == (0.0, 0.0, 0.0)
    # identical sets: the same densities against two bands, so the stricter band's side is exactly 1 and
    # the other is (rows above both bands) / (rows above the looser band)
    same = top_pr(real, real, projection_seed=0, bootstrap_seed=0)
    s = cosine_kde(torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64), same.bandwidth_real)
    hi, lo = max(same.band_real, same.band_fake), min(same.band_real, same.band_fake)
    assert max(same.precision, same.recall) == 1.0
    assert min(same.precision, same.recall) == int((s > hi).sum()) / int((s > lo).sum()) >= 0.9
    # two samples of one distribution: both near 1 (consistency, Kim et al. 2023 sec. 3; 400 rows, 10 resamples)
    fresh = top_pr(real, fake, projection_seed=0, bootstrap_seed=0)
    assert min(fresh.precision, fresh.recall) >= 0.85
    # joint scaling by a power of two changes no decision (the KDE is unnormalised)
    twice = top_pr(2 * real, 2 * fake, projection_seed=0, bootstrap_seed=0)
    assert (twice.precision, twice.recall) == (fresh.precision, fresh.recall)
    assert twice.bandwidth_real == 2 * fresh.bandwidth_real
    with pytest.raises(ValueError, match="more than 3 feature dimensions"):
        top_pr(real[:, :3], fake[:, :3], projection_seed=0, bootstrap_seed=0)
    with pytest.raises(ValueError, match="at least 42 rows"):
        top_pr(real[:41], fake, projection_seed=0, bootstrap_seed=0)
    assert MIN_SAMPLES == 162


def _knn_precision(real: np.ndarray, fake: np.ndarray, k: int = 3) -> float:
    """k-NN precision (Kynkäänniemi et al. 2019): fraction of fake rows inside some real row's k-NN ball."""
    r, f = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    radii = torch.cdist(r, r).kthvalue(k + 1, dim=1).values  # self at distance 0 is the first
    return float((torch.cdist(f, r) < radii[None]).any(dim=1).double().mean())


def test_outliers_in_the_reference_move_top_precision_less_than_knn_precision():
    """Kim et al. 2023's robustness claim: 20% scattered outliers added to the reference set inflate
    its k-NN balls (precision rises by > 0.1); they lie outside the KDE support, so TopP barely moves."""
    rng = np.random.default_rng(0)
    d, n = 64, 800
    real, fake = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    dirty = np.concatenate([real, 3.0 * rng.normal(size=(n // 5, d))])
    seeds = dict(projection_seed=1, bootstrap_seed=2)
    clean_top, dirty_top = top_pr(real, fake, **seeds), top_pr(dirty, fake, **seeds)
    knn_shift = _knn_precision(dirty, fake) - _knn_precision(real, fake)
    top_shift = abs(dirty_top.precision - clean_top.precision)
    assert knn_shift > 0.1, knn_shift
    assert top_shift < 0.03 and top_shift < knn_shift / 4, (top_shift, knn_shift)
    outlier_density = cosine_kde(torch.as_tensor(dirty), torch.as_tensor(dirty[n:]), dirty_top.bandwidth_real)
    assert not bool((outlier_density > dirty_top.band_real).any())  # no outlier is in the reference support


def test_eval_samples_records_the_seeds(tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "gaussian-16-test", "--reference", "gaussian-16-train", "--feature-extractor",
                 "identity", "--num-samples", "400", "--seed", "3", "--metrics", "top_pr", "--replicates", "2",
                 "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    entry = metrics["top_precision"]
    assert entry["seed"] == 3 and (entry["projection_seed"], entry["bootstrap_seed"]) == metric_seeds(3)
    assert entry["projected"] is False and entry["nearest_k"] == 80 and entry["alpha"] == 0.1
    assert 0.8 <= entry["value"] <= 1.0 and 0.8 <= metrics["top_recall"]["value"] <= 1.0
    assert "std" in entry["uncertainty"]
