"""Memorisation tests against the training set: the C_T data-copying test (Meehan et al. 2020) and
authenticity (Alaa et al. 2022). Copies of training rows planted among the samples must be
flagged; a fresh sample of the same distribution must not be."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from metrics.authenticity import authenticity
from metrics.data_copying import _mann_whitney_z, ct_statistic


def _mixture(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = np.array([[0.0, 0.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0], [0.0, 0.0, 6.0, 6.0]])
    return centres[rng.integers(0, 4, n)] + rng.normal(size=(n, 4))


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    train, held_out, fresh = _mixture(rng, 2000), _mixture(rng, 1000), _mixture(rng, 1000)
    copies = train[rng.choice(2000, 1000, replace=False)]
    planted = np.concatenate([fresh[:500], copies[:500]])  # half the samples copied (C_T's power grows with cell size)
    return {"train": train, "held_out": held_out, "fresh": fresh, "copies": copies, "planted": planted}


def test_mann_whitney_z_is_scipys_u_standardised():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=70), np.round(rng.normal(0.3, 1, size=90), 1)  # ties within b
    u = mannwhitneyu(b, a).statistic
    assert _mann_whitney_z(a, b) == pytest.approx((u - 70 * 90 / 2) / np.sqrt(70 * 90 * 161 / 12), rel=1e-12)


def test_ct_flags_copies_and_not_a_fresh_sample(sets):
    fresh = ct_statistic(sets["fresh"], sets["held_out"], sets["train"], seed=0)
    copies = ct_statistic(sets["copies"], sets["held_out"], sets["train"], seed=0)
    planted = ct_statistic(sets["planted"], sets["held_out"], sets["train"], seed=0)
    assert abs(fresh["value"]) < 3 and fresh["cells_used"] >= 10
    assert copies["value"] < -3 and planted["value"] < -3, (copies["value"], planted["value"])
    far = ct_statistic(sets["fresh"] * 1.5, sets["held_out"], sets["train"], seed=0)  # over-dispersed: farther from T
    assert far["value"] > 3


def test_authenticity_of_copies_fresh_and_planted_samples(sets):
    assert authenticity(sets["copies"], sets["train"])["value"] == 0.0
    fresh = authenticity(sets["fresh"], sets["train"])["value"]
    planted = authenticity(sets["planted"], sets["train"])["value"]
    assert 0.35 < fresh < 0.65  # data itself: about one half (see metrics/authenticity.py)
    assert planted == pytest.approx(0.5 * fresh, abs=0.05)  # the 500 copies are all unauthentic


def test_eval_samples_runs_them_when_given_the_training_set(tmp_path, sets):
    for name in ("train", "held_out", "planted"):
        np.savez(tmp_path / f"{name}.npz", x=sets[name].astype(np.float32))
    args = ["eval-samples", "--samples", str(tmp_path / "planted.npz"), "--reference", str(tmp_path / "held_out.npz"),
            "--feature-extractor", "identity", "--metrics", "fid", "--replicates", "0", "--no-cache", "--quiet"]
    out = tmp_path / "r.json"
    assert main([*args, "--train", str(tmp_path / "train.npz"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["metrics"]["ct_data_copying"]["value"] < -3 and record["metrics"]["authenticity"]["n_train"] == 2000
    assert record["data"]["train"]["shape"] == [2000, 4]
    assert main([*args, "--json", str(out)]) == 0  # without --train they do not run, and say nothing
    record = json.loads(out.read_text())
    assert "ct_data_copying" not in record["metrics"] and "ct_test" not in record["skipped"] and "train" not in record["data"]
