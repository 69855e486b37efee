"""CMMD (Jayasumana et al. 2024) and the Vendi score (Friedman & Dieng 2023): closed forms and the
reference implementations (google-research cmmd's estimator, the vendi_score package)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.cli import main
from metrics.cmmd import SCALE, SIGMA, cmmd
from metrics.vendi import vendi_score


def _reference_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research cmmd/distance.py ``mmd``, transcribed to numpy float64: full Gram matrices,
    the squared distances as x² + y² − 2xy, means over all pairs."""
    gamma = 1 / (2 * SIGMA**2)
    xx, yy, xy = x @ x.T, y @ y.T, x @ y.T
    xs, ys = np.diag(xx), np.diag(yy)
    k_xx = np.mean(np.exp(-gamma * (-2 * xx + xs[:, None] + xs[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * xy + xs[:, None] + ys[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * yy + ys[:, None] + ys[None, :])))
    return SCALE * (k_xx + k_yy - 2 * k_xy)


def _gaussian_kernel_mean(var: float, mean_sq: float, d: int) -> float:
    """E exp(−γ‖A − B‖²) for A − B ~ N(δ, v I_d) with ‖δ‖² = mean_sq: (1 + 2γv)^(−d/2) exp(−γ‖δ‖²/(1 + 2γv))."""
    gamma = 1 / (2 * SIGMA**2)
    return (1 + 2 * gamma * var) ** (-d / 2) * math.exp(-gamma * mean_sq / (1 + 2 * gamma * var))


def test_cmmd_equals_the_reference_estimator_across_tiles():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 6, (1500, 16)), rng.normal(1, 5, (1100, 16))  # 1500 rows: two tiles
    assert cmmd(x, y) == pytest.approx(_reference_cmmd(x, y), rel=1e-9)
    assert cmmd(x, x) == 0.0 and cmmd(x, y) > 0
    perm = rng.permutation(len(x))
    assert cmmd(x[perm], y) == pytest.approx(cmmd(x, y), rel=1e-12)


def test_cmmd_expectation_on_gaussians_is_the_closed_form():
    """Isotropic Gaussians N(μ1, s1² I) vs N(μ2, s2² I): the biased estimator's expectation keeps the
    diagonal, E = 1000·[1/n + (n−1)/n·c(2s1²) + 1/m + (m−1)/m·c(2s2²) − 2 c(s1² + s2², ‖μ1 − μ2‖²)]."""
    d, n, m, s1, s2, shift = 8, 300, 200, 4.0, 5.0, 3.0
    truth = SCALE * (1 / n + (n - 1) / n * _gaussian_kernel_mean(2 * s1**2, 0.0, d)
                     + 1 / m + (m - 1) / m * _gaussian_kernel_mean(2 * s2**2, 0.0, d)
                     - 2 * _gaussian_kernel_mean(s1**2 + s2**2, d * shift**2, d))
    values = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        values.append(cmmd(rng.normal(0, s1, (n, d)), rng.normal(shift, s2, (m, d))))
    mean, se = np.mean(values), np.std(values, ddof=1) / math.sqrt(len(values))
    assert abs(mean - truth) < 4 * se, (mean, truth, se)
    assert truth > 0.05 * SCALE  # the test sees a real difference, not a value near 0


def test_vendi_closed_forms():
    d = 6
    assert vendi_score(np.tile([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0]], (40, 1))) == pytest.approx(1.0, abs=1e-9)
    assert vendi_score(np.eye(d) * 3.0) == pytest.approx(d, rel=1e-9)  # d orthogonal rows: d distinct samples
    three = np.repeat(np.eye(d)[:3] * [[1.0], [2.0], [5.0]], 10, axis=0)  # 3 directions, 10 copies each
    assert vendi_score(three) == pytest.approx(3.0, rel=1e-9)
    with pytest.raises(ValueError, match="norm 0"):
        vendi_score(np.zeros((3, 2)))


def test_vendi_equals_the_vendi_score_package():
    from vendi_score import vendi

    rng = np.random.default_rng(1)
    for x in (rng.normal(size=(200, 12)), rng.normal(size=(30, 64)), np.abs(rng.normal(size=(500, 3)))):
        assert vendi_score(x) == pytest.approx(vendi.score_dual(x), rel=1e-9)


def test_eval_samples_reports_both_with_their_protocol(tmp_path):
    import json

    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--feature-extractor", "identity",
                 "--num-samples", "200", "--metrics", "cmmd,vendi", "--replicates", "4", "--json", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["cmmd"]["sigma"] == 10.0 and metrics["cmmd"]["feature_extractor"] == "identity"
    assert metrics["cmmd"]["uncertainty"]["std"] > 0
    assert 1.0 <= metrics["vendi"]["value"] <= 2.0 and metrics["vendi"]["reference_vendi"] > 1.0  # 2-D rows
