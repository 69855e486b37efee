"""Per-class FD (metrics/class_fd.py): closed form on Gaussian classes, the label-blind model the
pooled FD cannot see, errors, and the pipeline from a class-conditional model's requested labels."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.class_fd import per_class_fd
from metrics.fid import fid_of_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def _classes(rng, means, n):
    x = np.concatenate([rng.standard_normal((n, 2)) + m for m in means])
    return x, np.repeat(np.arange(len(means)), n)


def test_per_class_fd_is_the_mean_of_the_closed_form_distances():
    """Class k: samples N(μ_k, I), reference N(μ_k + δ_k, I), so FD_k = ‖δ_k‖² (equal covariances); with
    20,000 rows per class and set the noise of ‖Δμ̂‖² is about 2‖δ‖ sqrt(2/20,000) (0.014 at ‖δ‖ = 0.7): 0.03."""
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    shift = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    fake, fl = _classes(rng, means, 20_000)
    real, rl = _classes(rng, means + shift, 20_000)
    value, per_class, counts = per_class_fd(fake, fl, real, rl)
    want = (shift ** 2).sum(1)
    assert np.allclose([per_class[k] for k in range(3)], want, atol=0.03), per_class
    assert value == pytest.approx(want.mean(), abs=0.03) and counts[1] == (20_000, 20_000)


def test_a_model_that_ignores_its_labels_is_seen_by_the_per_class_fd_not_the_pooled_fd():
    """Samples with the reference's exact distribution, but each asked for a random class: the pooled FD
    is the noise of two samples (< 0.01), the per-class FD the spread of the class means (~10)."""
    rng = np.random.default_rng(1)
    means = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    real, rl = _classes(rng, means, 3000)
    fake, fl = _classes(rng, means, 3000)
    blind = rng.permutation(fl)
    assert fid_of_rows(fake, real) < 0.01
    assert per_class_fd(fake, fl, real, rl)[0] < 0.02
    assert per_class_fd(fake, blind, real, rl)[0] > 5.0


def test_errors_name_the_short_class_and_the_label_count():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="class 2 has 1 samples and 0 reference rows"):
        per_class_fd(x, np.array([0, 0, 1, 1, 2]), np.ones((4, 2)), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="need one label per row"):
        per_class_fd(x, np.array([0, 1]), x[:4], np.array([0, 0, 1, 1]))


def test_a_class_conditional_model_gets_a_per_class_fd_and_an_unlabelled_reference_skips_it(tmp_path):
    """cfg-fm (untrained, tiny) on 8gaussians, whose labels are the mode index: the record holds one FD
    per requested class; against gaussian-2 (no labels) it is skipped, and the record says why."""
    from harness.runner import ModelEvalConfig, evaluate_model
    from harness.train import TrainConfig, train

    out = tmp_path / "cfg.pt"
    train(TrainConfig(model="cfg-fm", dataset="8gaussians-train", out=str(out), steps=2, seed=0, num_train=256),
          model_config={"shape": [2], "num_classes": 8, "hidden": 16, "depth": 1, "time_dim": 8, "batch_size": 64,
                        "steps": 2, "sample_steps": 2}, progress=False)
    record = evaluate_model(ModelEvalConfig.from_dict({"dataset": "8gaussians-test", "checkpoint": str(out),
                                                       "num_samples": 400, "metrics": ["class_fd", "fid"],
                                                       "feature_extractor": "identity"}), progress=False)
    entry = record["metrics"]["class_fd"]
    assert sorted(entry["per_class"]) == [str(k) for k in range(8)] and entry["value"] > 0
    assert entry["value"] == pytest.approx(np.mean(list(entry["per_class"].values())))
    assert entry["uncertainty"]["std"] > 0
    record = evaluate_model(ModelEvalConfig.from_dict({"dataset": "gaussian-2-test", "checkpoint": str(out), "num_samples": 100,
                                                       "metrics": ["class_fd"], "feature_extractor": "identity"}), progress=False)
    assert "class_fd" not in record["metrics"]
    assert record["skipped"]["class_fd"].startswith("the reference set has no class labels")
