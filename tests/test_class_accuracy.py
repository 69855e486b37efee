"""Class accuracy of class-conditional samples (metrics/class_accuracy.py): the formula, and the
requested labels travelling from a class-conditional model to the metric."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.class_accuracy import class_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_accuracy_and_its_binomial_error():
    logits = np.eye(4)[[0, 1, 2, 3, 0, 0, 1, 2]]  # argmax = 0 1 2 3 0 0 1 2
    labels = np.array([0, 1, 2, 3, 1, 2, 3, 0])
    acc, se = class_accuracy(logits, labels)
    assert acc == 0.5 and se == pytest.approx(np.sqrt(0.25 / 8))
    with pytest.raises(ValueError, match="requested labels must lie in 0..3"):
        class_accuracy(logits, labels + 1)


def test_a_class_conditional_model_records_the_accuracy_on_its_requested_labels(tmp_path):
    """cfg-fm (3 training steps) on mnist5k: the record's class accuracy equals the mnist-cnn
    classifier's accuracy on the same samples against labels i mod 10; a model without requested
    labels cannot run the metric and says why."""
    import torch

    from harness.core.rng import BatchRNG
    from harness.runner import ModelEvalConfig, evaluate_model, load_model
    from harness.train import TrainConfig, train
    from metrics.features import get_feature_extractor

    out = tmp_path / "cfg.pt"
    train(TrainConfig(model="cfg-fm", dataset="mnist5k-train", out=str(out), steps=3, seed=0),
          model_config={"shape": [1, 28, 28], "num_classes": 10, "base": 8, "time_dim": 8, "batch_size": 16,
                        "sample_steps": 2, "steps": 3}, progress=False)
    record = evaluate_model(ModelEvalConfig.from_dict({"dataset": "mnist5k-test", "checkpoint": str(out), "num_samples": 40,
                                                       "batch_size": 20, "metrics": ["class_accuracy"],
                                                       "feature_extractor": "mnist-cnn", "replicates": 0}), progress=False)
    got = record["metrics"]["class_accuracy"]["value"]
    model = load_model(ModelEvalConfig(dataset="mnist5k-test", checkpoint=str(out))).model
    from harness.convert import samples_to_data

    x = torch.cat([model.sample(20, BatchRNG(0, range(lo, lo + 20))) for lo in (0, 20)])
    logits = get_feature_extractor("mnist-cnn")(samples_to_data(x, model.data_spec))["logits"].numpy()
    assert got == pytest.approx(class_accuracy(logits, np.arange(40) % 10)[0])
    other = evaluate_model(ModelEvalConfig.from_dict({"dataset": "mnist5k-test", "model": "fm-ot",
                                                      "model_args": {"shape": [1, 28, 28], "base": 8, "time_dim": 8,
                                                                     "sampler": "euler", "sample_steps": 2},
                                                      "num_samples": 20, "metrics": ["class_accuracy"],
                                                      "feature_extractor": "mnist-cnn"}), progress=False)
    assert "class_accuracy" not in other["metrics"] and "no requested labels" in other["skipped"]["class_accuracy"]
