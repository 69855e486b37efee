"""The data and chance rows: each sampler reproduces what it claims to know of the training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.core.rng import BatchRNG
from harness.datasets.toys import load_toy
from harness.train import TrainConfig, train


def _trained(tmp_path, name: str, config: dict, dataset: str = "8gaussians-train", num_train: int = 1000):
    from harness.runner import ModelEvalConfig, load_model

    out = tmp_path / f"{name}.pt"
    train(TrainConfig(model=name, dataset=dataset, out=str(out), num_train=num_train, seed=0),
          model_config=config, progress=False)
    return load_model(ModelEvalConfig(dataset="8gaussians-test", checkpoint=str(out))).model


def _draw(model, n: int, seed: int = 0) -> np.ndarray:
    return model.sample(n, BatchRNG(seed, range(n))).numpy().astype(np.float64)


def test_data_sample_returns_training_rows_and_each_sample_depends_only_on_its_index(tmp_path):
    model = _trained(tmp_path, "data-sample", {"capacity": 1000, "batch_size": 250})
    train_rows = load_toy("8gaussians", "train", num_samples=1000).x.astype(np.float64)
    x = _draw(model, 300)
    assert all((np.abs(train_rows - row).sum(1) == 0).any() for row in x)
    assert int(model.seen) == 1000 and len({tuple(r) for r in x}) > 250  # resampled uniformly: few repeats
    tail = model.sample(100, BatchRNG(0, range(200, 300))).numpy()
    assert np.array_equal(tail, x[200:].astype(np.float32))


def test_marginal_sampler_draws_each_dimension_from_its_column(tmp_path):
    model = _trained(tmp_path, "chance-marginals", {"capacity": 1000, "batch_size": 250})
    train_rows = load_toy("8gaussians", "train", num_samples=1000).x
    x = _draw(model, 500).astype(np.float32)
    for d in range(2):
        assert np.isin(x[:, d], train_rows[:, d]).all()
    # the product of the marginals breaks the modes: most pairs are not a training row
    assert np.mean([(np.abs(train_rows - row).sum(1) == 0).any() for row in x]) < 0.05


def test_gaussian_fit_has_the_training_moments(tmp_path):
    model = _trained(tmp_path, "chance-gaussian", {"steps": 4, "batch_size": 250})
    train_rows = load_toy("8gaussians", "train", num_samples=1000).x.astype(np.float64)
    mean, cov = model.moments()
    assert np.allclose(mean.numpy(), train_rows.mean(0), atol=1e-6)
    assert np.allclose(cov.numpy(), np.cov(train_rows, rowvar=False, ddof=0), atol=1e-6)
    from scipy.stats import multivariate_normal

    probe = train_rows[:5]
    exact = multivariate_normal(mean.numpy(), cov.numpy()).logpdf(probe)
    assert np.allclose(model.log_prob(torch.as_tensor(probe)).numpy(), exact, rtol=1e-10)
    x = _draw(model, 20_000)
    assert np.allclose(x.mean(0), train_rows.mean(0), atol=0.05)
    assert np.allclose(np.cov(x, rowvar=False), cov.numpy(), atol=0.1)


def test_uniform_box_stays_in_the_training_box(tmp_path):
    model = _trained(tmp_path, "chance-uniform", {"steps": 4, "batch_size": 250})
    train_rows = load_toy("8gaussians", "train", num_samples=1000).x
    x = _draw(model, 2000).astype(np.float32)
    assert (x >= train_rows.min(0)).all() and (x <= train_rows.max(0)).all()
    assert np.allclose(x.min(0), train_rows.min(0), atol=0.05) and np.allclose(x.max(0), train_rows.max(0), atol=0.05)


def test_an_untrained_reference_sampler_says_to_train_it():
    from baselines.reference_samplers import GaussianFit

    with pytest.raises(ValueError, match="train it first"):
        GaussianFit().sample(2, BatchRNG(0, range(2)))


def test_image_marginals_stay_in_range(tmp_path):
    from harness.runner import ModelEvalConfig, load_model

    out = tmp_path / "m.pt"
    train(TrainConfig(model="chance-marginals", dataset="digits-train", out=str(out), seed=0),
          model_config={"shape": [1, 8, 8], "capacity": 500, "batch_size": 100}, progress=False)
    model = load_model(ModelEvalConfig(dataset="digits-test", checkpoint=str(out))).model
    x = model.sample(16, BatchRNG(0, range(16)))
    assert x.shape == (16, 1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.isfinite(x).all()
