"""PRD curves (Sajjadi et al. 2018): the curve of known histograms in closed form, and the
F8 / F1/8 summaries telling mode dropping (low recall) from off-data samples (low precision)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.cli import main
from metrics.prd import f_beta_pair, kmeans, prd_curve, prd_from_features


def test_curve_of_equal_histograms_reaches_one_one():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    precision, recall = prd_curve(p, p)
    assert np.max(np.minimum(precision, recall)) == pytest.approx(1.0, abs=1e-6)
    assert f_beta_pair(precision, recall) == pytest.approx((1.0, 1.0), abs=1e-6)


def test_curve_of_a_model_dropping_half_the_modes():
    """Reference uniform on 4 cells, model uniform on 2 of them: the curve is (λ/2, 1/2) for λ ≤ 2 and
    (1, 1/λ) beyond, so max recall 1/2 with precision 1: F8 = 65·0.5/64.5, F1/8 = (65/64)·0.5/(1/64 + 0.5)."""
    precision, recall = prd_curve(np.full(4, 0.25), np.array([0.5, 0.5, 0.0, 0.0]))
    assert recall.max() == pytest.approx(0.5, abs=1e-6) and precision.max() == pytest.approx(1.0, abs=1e-9)
    f8, f18 = f_beta_pair(precision, recall)
    assert f8 == pytest.approx(65 * 0.5 / 64.5, abs=2e-3)
    assert f18 == pytest.approx((65 / 64) * 0.5 / (1 / 64 + 0.5), abs=2e-3)


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 20, (5, 3))
    x = torch.as_tensor(np.repeat(centres, 40, axis=0) + rng.normal(0, 0.1, (200, 3)))
    labels = kmeans(x, 5, generator=torch.Generator().manual_seed(0)).numpy()
    assert len(set(labels)) == 5 and all(len(set(labels[i * 40:(i + 1) * 40])) == 1 for i in range(5))


def _blobs(rng: np.random.Generator, centres: np.ndarray, per: int) -> np.ndarray:
    return np.repeat(centres, per, axis=0) + rng.normal(0, 0.2, (len(centres) * per, centres.shape[1]))


def test_f8_sees_dropped_modes_and_f18_sees_samples_off_the_data():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 10, (20, 8))
    real = _blobs(rng, centres, 25)
    same = prd_from_features(_blobs(rng, centres, 25), real, seed=0, runs=3)
    half = prd_from_features(_blobs(rng, centres[:10], 50), real, seed=0, runs=3)
    off = prd_from_features(np.concatenate([_blobs(rng, centres[:10], 25), _blobs(rng, centres[:10] + 40, 25)]),
                            real, seed=0, runs=3)
    assert same["f8"] > 0.9 and same["f1_8"] > 0.9
    assert half["f8"] < 0.6 < 0.9 < half["f1_8"]  # covers half the modes: recall drops, precision stays
    assert off["f1_8"] < 0.6 and off["f8"] > off["f1_8"]  # half the samples off the data: precision drops
    with pytest.raises(ValueError, match="equal size"):
        prd_from_features(real[:100], real, seed=0)


def test_eval_samples_records_the_curve(tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "8gaussians-test", "--reference", "8gaussians-train", "--num-samples", "400",
                 "--feature-extractor", "identity", "--metrics", "prd", "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert len(metrics["prd_f8"]["precision_curve"]) == 101 and metrics["prd_f8"]["clusters"] == 20
    assert metrics["prd_f8"]["value"] > 0.8 and metrics["prd_f1_8"]["value"] > 0.8  # a fresh sample of the data
