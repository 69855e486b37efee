"""Score matching (ISM, sliced, DSM), Langevin sampling, the score_error metric and the reference scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines.score_matching import ScoreMatching, dsm_loss, ism_loss, score_dsm, ssm_loss
from harness.core.densities import EIGHT_GAUSSIANS, GaussianMixture
from harness.core.protocols import capabilities
from harness.core.rng import BatchRNG
from metrics.score_error import score_errors

pytestmark = pytest.mark.usefixtures("one_thread")


class _Linear(nn.Module):
    """s(x) = x Wᵀ + b: a score whose Jacobian is W everywhere."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _gaussian(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) @ root.T
    return x, root @ root.T


def test_implicit_and_sliced_objectives_equal_the_closed_form_on_a_gaussian():
    # x ~ N(0, Σ), s(x) = W x + b: E[tr W + ½|W x + b|²] = tr W + ½ tr(W Σ Wᵀ) + ½|b|²
    dim = 3
    x, cov = _gaussian(40_000, dim, seed=0)
    model = _Linear(dim)
    with torch.no_grad():
        w, b = model.lin.weight, model.lin.bias
        exact = float(torch.trace(w) + 0.5 * torch.trace(w @ cov @ w.T) + 0.5 * b.square().sum())
    ism = ism_loss(model, x).detach()
    assert float(ism.mean()) == pytest.approx(exact, abs=4 * float(ism.std()) / math.sqrt(len(x)))
    v = torch.randn(len(x), 4, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for reduced in (True, False):
        ssm = ssm_loss(model, x, v, variance_reduction=reduced).detach()
        assert float(ssm.mean()) == pytest.approx(exact, abs=4 * float(ssm.std()) / math.sqrt(len(x)))
    # the exact trace: with a single direction v = e_d the sliced first term is ∂s_d/∂x_d
    e = torch.eye(dim, dtype=torch.float64)[None].expand(len(x[:5]), dim, dim)
    first = (ssm_loss(model, x[:5], e, variance_reduction=True) - 0.5 * model(x[:5]).square().sum(-1)).detach()
    assert torch.allclose(first * dim, torch.full((5,), float(torch.trace(model.lin.weight.detach())), dtype=torch.float64))


def test_the_denoising_optimum_on_a_gaussian_is_the_smoothed_gaussians_score():
    # x ~ N(μ, s²), noise σ: the minimiser over affine scores is −(x − μ) / (s² + σ²) (Vincent 2011)
    mu, s, sigma = 0.7, 0.5, 0.3
    g = torch.Generator().manual_seed(0)
    x = mu + s * torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    model = _Linear(1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dsm_loss(model, x, eps, sigma).mean()
        loss.backward()
        return loss

    opt.step(closure)
    slope, intercept = float(model.lin.weight), float(model.lin.bias)
    var = s**2 + sigma**2
    assert slope == pytest.approx(-1 / var, rel=0.01)
    assert intercept == pytest.approx(mu / var, rel=0.02)


def test_mixture_score_is_the_gradient_of_its_log_density_and_smoothing_widens_the_components():
    mix = GaussianMixture("m", np.array([[0.0, 0.0], [1.5, -0.5], [-1.0, 2.0]]), 0.4)
    x = np.random.default_rng(0).normal(size=(50, 2)) * 1.5
    h = 1e-6
    numeric = np.stack([(mix.log_prob(x + h * e) - mix.log_prob(x - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    assert np.allclose(mix.score(x), numeric, atol=1e-5)
    wide = mix.smoothed(0.3)
    assert wide.std == pytest.approx(0.5) and np.array_equal(wide.centers, mix.centers)
    with pytest.raises(ValueError, match="noise_std"):
        mix.smoothed(-1.0)


def test_score_errors_are_zero_for_the_truth_one_for_a_zero_score_and_their_errors_shrink():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2000, 2))
    same = score_errors(truth, truth)
    assert same["fisher"] == 0 and same["rel_error"] == 0
    zero = score_errors(np.zeros_like(truth), truth)
    assert zero["rel_error"] == pytest.approx(1.0) and zero["rel_error_stderr"] < 1e-12
    assert zero["fisher"] == pytest.approx(0.5 * (truth**2).sum(1).mean())
    noisy = truth + 0.1 * rng.normal(size=truth.shape)
    res = score_errors(noisy, truth)
    assert 0.05 < res["rel_error"] < 0.2 and 0 < res["rel_error_stderr"] < 0.01
    with pytest.raises(ValueError, match="NaN"):
        score_errors(np.full_like(truth, np.nan), truth)


def _trained_reference(name: str, rows: torch.Tensor, **config):
    from harness.models import build_registered

    model = build_registered(name, {"shape": [2], **config})
    for start in range(0, len(rows), 500):
        model.training_step(rows[start:start + 500], step=0, optimizers=[], generator=torch.Generator())
    return model


def test_reference_rows_give_the_parzen_and_the_gaussian_fit_scores_only_when_asked():
    rows = torch.from_numpy(np.random.default_rng(0).normal(size=(1000, 2)) * [1.0, 0.5] + [0.3, -0.2]).float()
    sigma = 0.3
    parzen = _trained_reference("data-sample", rows, capacity=1000, score_noise_std=sigma)
    fit = _trained_reference("chance-gaussian", rows, steps=2, score_noise_std=sigma)
    assert "Score" in capabilities(parzen) and "Score" in capabilities(fit)
    assert "Score" not in capabilities(_trained_reference("data-sample", rows, capacity=1000))
    assert "Score" not in capabilities(_trained_reference("chance-gaussian", rows, steps=2))
    with pytest.raises(ValueError, match="score_noise_std"):
        _trained_reference("chance-uniform", rows, steps=2, score_noise_std=sigma)
    # Parzen: the gradient of log (1/m) Σ N(x; x_i, σ² I), by finite differences of the mixture's density
    x = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-2.0, 1.0]])
    window = GaussianMixture("parzen", rows.double().numpy(), sigma)
    assert np.allclose(parzen.score(x).double().numpy(), window.score(x.double().numpy()), atol=1e-4)
    # Gaussian fit: −(Σ + σ² I)⁻¹ (x − μ)
    mean, cov = fit.moments()
    expected = -torch.linalg.solve(cov + sigma**2 * torch.eye(2, dtype=cov.dtype), (x.double() - mean).T).T
    assert torch.allclose(fit.score(x).double(), expected, atol=1e-5)


def test_config_validation_factories_and_capabilities():
    assert capabilities(ScoreMatching()) == ["Sampler", "Score"]
    for bad, match in (({"objective": "esm"}, "objective"), ({"sigma": 0.0}, "sigma"), ({"num_projections": 0}, "num_projections"),
                       ({"langevin_step_size": -1.0}, "langevin_step_size"), ({"grad_clip": -1.0}, "grad_clip")):
        with pytest.raises(ValueError, match=match):
            ScoreMatching(**bad)
    with pytest.raises(ValueError, match="score-ism"):
        score_dsm(objective="ism")
    with pytest.raises(TypeError):
        ScoreMatching(noise=0.1)


def test_langevin_samples_do_not_depend_on_the_batch_and_count_one_call_per_step():
    from harness.core.nfe import counting

    model = ScoreMatching(hidden=8, depth=1, langevin_steps=7)
    whole = model.sample(4, BatchRNG(3, range(4)))
    parts = torch.cat([model.sample(2, BatchRNG(3, [0, 1])), model.sample(2, BatchRNG(3, [2, 3]))])
    assert torch.equal(whole, parts) and whole.dtype == torch.float32
    with counting(model) as count:
        model.sample(5, BatchRNG(0, range(5)))
    assert count.forward_calls == 7 + 1  # Langevin steps and the denoising step


@pytest.mark.parametrize(("objective", "max_rel_error"), [("dsm", 0.15), ("ssm", 0.32), ("ism", 0.28)])
def test_seeded_training_on_8gaussians_learns_the_smoothed_score(objective, max_rel_error, tmp_path):
    """Measured at seed 0, 1,500 steps, σ = 0.2, 500 test points: score_rel_error 0.090 (dsm), 0.238
    (ssm), 0.202 (ism); 8, 7 and 8 modes covered, high-quality fractions 0.98, 0.72, 0.75. The chance
    row (the Gaussian fit's smoothed score) has 0.99, the Parzen score of the training rows 0.004."""
    from harness.runner import ModelEvalConfig, evaluate_model
    from harness.train import TrainConfig, train

    out = tmp_path / f"{objective}.pt"
    train(TrainConfig(model=f"score-{objective}", dataset="8gaussians-train", out=str(out), steps=1500, seed=0,
                      num_train=5000), model_config={"sigma": 0.2, "langevin_steps": 300}, progress=False)
    record = evaluate_model(ModelEvalConfig(dataset="8gaussians-test", checkpoint=str(out), num_samples=500,
                                            metrics=("score_error", "modes", "nfe"), feature_extractor="identity"),
                            progress=False)
    metrics = record["metrics"]
    assert metrics["score_rel_error"]["value"] < max_rel_error
    assert metrics["score_rel_error"]["noise_std"] == 0.2
    assert metrics["modes_covered"]["value"] >= 7
    assert metrics["high_quality_fraction"]["value"] > 0.6
    assert metrics["nfe_mean"]["value"] == 301
    assert EIGHT_GAUSSIANS.name in metrics["score_rel_error"]["truth"]
