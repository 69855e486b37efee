"""The reconstruction metric: MSE per value of an autoencoder and the code perplexity of a discrete one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.core.metric import MetricInputs, ModelData
from harness.core.protocols import DataSpec, capabilities
from metrics.reconstruction import METRIC, perplexity_of_counts

pytestmark = pytest.mark.usefixtures("one_thread")


class _Shrink(nn.Module):
    """reconstruct(x) = a·x, with ``codes`` the first pixel thresholded at 0.5 when ``discrete``."""

    def __init__(self, a: float, discrete: bool) -> None:
        super().__init__()
        self.a = a
        self.data_spec = DataSpec((1, 2, 2), "continuous", (0.0, 1.0))
        if discrete:
            self.num_codes = 4
            self.codes = lambda x: (x[:, 0, 0, 0] >= 0.5).long()  # codes 0 and 1 of 4

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x


def _inputs(model, images: np.ndarray) -> MetricInputs:
    batches = [(0, torch.from_numpy(images[:3])), (3, torch.from_numpy(images[3:]))]
    return MetricInputs(seed=0, model=model, data=ModelData(batches=batches, spec=model.data_spec, n=len(images), dataset="toy"))


def test_perplexity_of_counts_is_k_for_uniform_use_and_one_for_a_single_code():
    assert perplexity_of_counts(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity_of_counts(torch.tensor([0, 7, 0])) == pytest.approx(1.0)
    assert perplexity_of_counts(torch.tensor([1, 3])) == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    with pytest.raises(ValueError, match="no codes"):
        perplexity_of_counts(torch.zeros(3))


def test_recon_mse_is_the_closed_form_on_dequantized_pixels_and_codes_are_counted():
    images = np.random.default_rng(0).integers(0, 256, size=(7, 1, 2, 2), dtype=np.uint8)
    identity = METRIC.compute(_inputs(_Shrink(1.0, discrete=False), images), None)
    assert identity["recon_mse"].value == 0.0 and "code_perplexity" not in identity
    assert "Reconstructor" in capabilities(_Shrink(1.0, discrete=False))
    half = METRIC.compute(_inputs(_Shrink(0.5, discrete=True), images), None)
    # the metric dequantizes like the bounds: x = (v + u) / 256 with the per-example noise of seed 0
    from harness.core.rng import BatchRNG
    from metrics.likelihood import model_inputs

    x = torch.cat([model_inputs(torch.from_numpy(images[i:j]), DataSpec((1, 2, 2), "continuous", (0.0, 1.0)),
                                BatchRNG(0, range(i, j)))[0] for i, j in ((0, 3), (3, 7))]).double()
    assert half["recon_mse"].value == pytest.approx(float((0.25 * x**2).flatten(1).mean(1).mean()), rel=1e-9)
    high = int((x[:, 0, 0, 0] >= 0.5).sum())
    assert half["code_perplexity"].value == pytest.approx(perplexity_of_counts(torch.tensor([7 - high, high])))
    assert half["code_perplexity"].fields["num_codes"] == 4


def test_a_vq_vae_record_has_reconstruction_and_code_usage(tmp_path):
    from harness.runner import ModelEvalConfig, evaluate_model
    from harness.train import TrainConfig, train

    out = tmp_path / "vq.pt"
    config = {"shape": [1, 8, 8], "downsample": 2, "hidden": 8, "num_res_blocks": 1, "num_codes": 8, "code_dim": 4,
              "steps": 300, "batch_size": 32}
    train(TrainConfig(model="vq-vae-uniform", dataset="digits-train", out=str(out), steps=300, seed=0),
          model_config=config, progress=False)
    record = evaluate_model(ModelEvalConfig(dataset="digits-test", checkpoint=str(out), num_samples=100,
                                            metrics=("reconstruction",)), progress=False)
    metrics = record["metrics"]
    assert 0 < metrics["recon_mse"]["value"] < 0.06  # a constant mean image scores 0.073
    assert 1.0 <= metrics["code_perplexity"]["value"] <= 8.0
    assert metrics["code_perplexity"]["codes_counted"] == 100 * 16
