"""Active units (Burda et al. 2016) and KL-active dims on encoders with a known number of informative dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from baselines.analytic import LinearGaussianVAE
from harness.core.rng import BatchRNG
from metrics.active_units import RunningMoments, active_units, encoder_active_units, kl_active_dims
from metrics.likelihood import batches_of


def _model_and_data(informative: int, n: int = 600) -> tuple[LinearGaussianVAE, Tensor]:
    model = LinearGaussianVAE.with_informative_dims(12, 8, informative, seed=informative)
    return model, model.sample(n, BatchRNG(7, range(n)))


@pytest.mark.parametrize("informative", [0, 3, 8])
def test_counts_equal_number_of_informative_dims(informative: int) -> None:
    model, x = _model_and_data(informative)
    result = encoder_active_units(model, batches_of(x, 128))
    assert result["n"] == 600
    assert result["active_units"]["count"] == informative
    assert result["kl_active_dims"]["count"] == informative
    assert result["active_units"]["ddof"] == 1 and result["active_units"]["threshold"] == 1e-2
    variances = np.array(result["active_units"]["variances"])
    assert np.all(variances[informative:] == 0.0) and np.all(variances[:informative] > 0.5)


def test_streaming_equals_one_shot_numpy() -> None:
    model, x = _model_and_data(3)
    streamed = encoder_active_units(model, batches_of(x, 50))
    with torch.no_grad():
        means, logvars = (t.numpy() for t in model.encode(x))
    np.testing.assert_allclose(streamed["active_units"]["variances"], np.var(means, axis=0, ddof=1), rtol=1e-12, atol=1e-15)
    kl = 0.5 * (means**2 + np.exp(logvars) - logvars - 1).mean(0)
    np.testing.assert_allclose(streamed["kl_active_dims"]["kl_per_dim"], kl, rtol=1e-12, atol=1e-15)
    one_shot = active_units(means, ddof=0)
    np.testing.assert_allclose(one_shot["variances"], np.var(means, axis=0), rtol=1e-12, atol=1e-15)
    assert kl_active_dims(means, logvars)["count"] == one_shot["count"] == 3


def test_batch_split_invariance() -> None:
    model, x = _model_and_data(5)
    reference = encoder_active_units(model, [x])
    splits = [(range(0, 1), x[:1]), (range(1, 250), x[1:250]), (range(250, 251), x[250:251]), (range(251, 600), x[251:])]
    for batches in (batches_of(x, 7), batches_of(x, 599), splits):
        result = encoder_active_units(model, batches)
        np.testing.assert_allclose(result["active_units"]["variances"], reference["active_units"]["variances"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(result["kl_active_dims"]["kl_per_dim"], reference["kl_active_dims"]["kl_per_dim"], rtol=1e-12, atol=1e-15)


def test_running_moments_and_errors() -> None:
    rows = torch.randn(101, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e3 + 1e6
    moments = RunningMoments()
    for part in rows.split(10):
        moments.update(part)
    torch.testing.assert_close(moments.variance(1), rows.var(0), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="more than 1 examples"):
        active_units(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        active_units(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="ddof must be 0"):
        active_units(np.zeros((4, 3)), ddof=2)
