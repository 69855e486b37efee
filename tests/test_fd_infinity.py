"""FD∞ (Chong & Forsyth 2020): the 1/N bias of FD removed by extrapolation, on Gaussians whose true
Fréchet distance is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from metrics.fd_infinity import fd_infinity
from metrics.fid import frechet_distance


def test_fd_infinity_removes_the_finite_sample_bias_on_gaussians():
    """Generated rows N(μ, I_32) against the exact reference N(0, I_32): the true FD is ‖μ‖² = 0.32.
    FD at n = 2,000 is biased upwards by ~0.15 (about d/n + d²/(4n) for identity covariances); FD∞,
    averaged over eight seeds, is within a fifth of that bias of the truth."""
    d, n = 32, 2000
    mu = np.full(d, 0.1)
    truth = float(mu @ mu)
    fd_n, fd_inf = [], []
    for seed in range(8):
        x = np.random.default_rng(seed).normal(size=(n, d)) + mu
        fd_n.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), np.zeros(d), np.eye(d)))
        fit = fd_infinity(x, np.zeros(d), np.eye(d), seed=seed)
        fd_inf.append(fit["value"])
        assert fit["ns"][0] == 200 and fit["ns"][-1] == n and len(fit["ns"]) == 15 and fit["slope"] > 0
    bias = np.mean(fd_n) - truth
    assert bias > 0.1  # the finite-sample bias the metric exists to remove is visible here
    assert abs(np.mean(fd_inf) - truth) < 0.2 * bias, (np.mean(fd_inf), truth, bias)


def test_fd_infinity_is_seeded_and_refuses_too_few_rows():
    x = np.random.default_rng(0).normal(size=(200, 4))
    a, b = (fd_infinity(x, np.zeros(4), np.eye(4), seed=3) for _ in range(2))
    assert a == b
    with pytest.raises(ValueError, match="at least 3 distinct sample counts"):
        fd_infinity(x[:2], np.zeros(4), np.eye(4), seed=0)


def test_eval_samples_records_the_points_of_the_fit(tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--feature-extractor", "identity",
                 "--num-samples", "300", "--metrics", "fid,fd_inf", "--json", str(out), "--quiet"]) == 0
    entry = json.loads(out.read_text())["metrics"]["fd_inf"]
    assert len(entry["ns"]) == len(entry["fd_values"]) == 15 and entry["label"] == "FD[identity]∞"
    assert entry["fit_stderr"] >= 0 and entry["fit_residual_rms"] >= 0 and "uncertainty" not in entry
