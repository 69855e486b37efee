"""Consistency models (baselines/consistency.py): the boundary condition, the schedules, the teacher's
denoiser and Heun step against the closed forms of Gaussian data, the multistep sampler's NFE, and
seeded distillation and training runs on a 2-D toy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines.consistency import ConsistencyModel, karras_sigmas
from baselines.flow_matching import FlowMatching
from baselines.interpolant import StochasticInterpolant
from harness.core.nfe import counting
from harness.core.rng import BatchRNG

pytestmark = pytest.mark.usefixtures("one_thread")

M, S = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7  # Gaussian data N(M, S² I)


class _GaussianVelocity(nn.Module):
    """The exact velocity E[a'_t x1 + b'_t x0 | x_t] of a flow's path for data N(M, S² I) and x0 ~ N(0, I)."""

    def __init__(self, flow: FlowMatching) -> None:
        super().__init__()
        self.flow = [flow]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b, da, db = (v.to(torch.float64)[:, None] for v in self.flow[0].path_coefficients(t.to(torch.float64)))
        x = x.to(torch.float64)
        x1 = M + a * S**2 / (a**2 * S**2 + b**2) * (x - a * M)
        x0 = (x - a * x1) / b
        return (da * x1 + db * x0).to(torch.float32)


def _gaussian_teacher(kind: type[FlowMatching], path: str) -> FlowMatching:
    flow = kind(path=path, sigma_min=0.0) if kind is FlowMatching else kind(path=path)
    flow.net = _GaussianVelocity(flow)
    return flow


def _denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x | x + σ z] for x ~ N(M, S² I): M + S² / (S² + σ²) (x − M)."""
    s2 = sigma.to(torch.float64)[:, None] ** 2
    return (M + S**2 / (S**2 + s2) * (x.to(torch.float64) - M)).to(torch.float32)


def test_the_boundary_condition_holds_exactly_and_the_skip_vanishes_at_large_noise():
    torch.manual_seed(0)
    model = ConsistencyModel(hidden=32, depth=2, time_dim=8)
    x = torch.randn(5, 2)
    eps = torch.full((5,), model.config.sigma_min)
    assert torch.equal(model.consistency(x, eps), x)  # c_skip(ε) = 1, c_out(ε) = 0
    c_skip, c_out, c_in = model.scalings(torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64))
    assert c_skip[0] == 1.0 and c_out[0] == 0.0
    assert c_skip[2] < 1e-4 and abs(c_out[2] - 0.5 * 79.998 / math.sqrt(0.25 + 6400)) < 1e-12
    assert abs(c_in[1] - 1 / math.sqrt(0.5)) < 1e-12


def test_karras_grid_and_the_ct_schedules():
    grid = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert grid.shape == (18,) and abs(grid[0] - 0.002) < 1e-15 and abs(grid[-1] - 80.0) < 1e-9
    assert (grid.diff() > 0).all()
    ct = ConsistencyModel(steps=1000, ct_s0=2, ct_s1=150, target_ema=0.9)
    assert ct.ct_schedule(0) == (2, pytest.approx(0.9))  # N(0) = s0, μ(0) = μ0
    assert ct.ct_schedule(1000)[0] == 151  # N(K) = s1 + 1
    n_half, mu_half = ct.ct_schedule(500)
    assert n_half == math.ceil(math.sqrt(0.5 * (151**2 - 4) + 4) - 1) + 1
    assert mu_half == pytest.approx(math.exp(2 * math.log(0.9) / n_half))
    assert ConsistencyModel(mode="cd", num_scales=18, target_ema=0.95).ct_schedule(500) == (18, 0.95)


@pytest.mark.parametrize(("kind", "path"), [(FlowMatching, "ot"), (StochasticInterpolant, "trig")])
def test_the_teachers_denoiser_and_heun_step_match_the_closed_forms_of_gaussian_data(kind, path):
    """A flow with the exact velocity of N(M, S² I) gives the exact denoiser E[x | x_σ] at every σ
    (the σ ↔ t map and the formula of the module docstring), and the Heun step follows the exact ODE
    solution (x_σ − M) / sqrt(S² + σ²) = const to third order in the step."""
    torch.manual_seed(0)
    cd = ConsistencyModel(mode="cd")
    cd.set_teacher(_gaussian_teacher(kind, path))
    x = torch.randn(6, 2)
    sigma = torch.tensor([0.002, 0.05, 0.5, 1.0, 10.0, 80.0])
    assert torch.allclose(cd.teacher_denoiser(x * sigma[:, None], sigma), _denoiser(x * sigma[:, None], sigma),
                          rtol=1e-4, atol=1e-4)
    start, end = torch.full((6,), 1.0), torch.full((6,), 0.9)
    xs = M.float() + torch.randn(6, 2) * math.sqrt(S**2 + 1.0)
    exact = M.float() + (xs - M.float()) * math.sqrt(S**2 + 0.81) / math.sqrt(S**2 + 1.0)
    heun = (cd.teacher_heun_step(xs, start, end) - exact).abs().max()
    euler = (xs + (end - start)[:, None] * (xs - cd.teacher_denoiser(xs, start)) / start[:, None] - exact).abs().max()
    assert heun < 1e-3 and heun < euler / 10, (heun, euler)  # measured: 2e-4 against 7e-3


def test_the_exact_consistency_function_of_gaussian_data_has_zero_distillation_loss():
    """With F chosen so that f is the exact consistency function of N(M, S² I), the CD loss with the
    exact teacher is zero up to the Heun steps' error, and CT's loss is not (its x̂_{t_n} = x + t_n z
    lies on another trajectory): the two losses differ exactly by what the teacher supplies."""
    torch.manual_seed(0)
    cd = ConsistencyModel(mode="cd", num_scales=18)
    cd.set_teacher(_gaussian_teacher(FlowMatching, "ot"))

    class Exact(nn.Module):  # f(x, σ) = M + (x − M) sqrt(S² + ε²) / sqrt(S² + σ²), solved for F
        def forward(self, x_in, c_noise):
            sigma = torch.exp(4 * c_noise.to(torch.float64))[:, None]
            x = x_in.to(torch.float64) * torch.sqrt(sigma**2 + 0.25)
            f = M + (x - M) * math.sqrt(S**2 + 0.002**2) / torch.sqrt(S**2 + sigma**2)
            c_skip, c_out, _ = (v[:, None] for v in cd.scalings(sigma[:, 0]))
            return ((f - c_skip * x) / c_out).to(torch.float32)

    cd.net, cd.target_net = Exact(), Exact()
    x = (M + S * torch.randn(256, 2, dtype=torch.float64)).float()
    z = torch.randn(256, 2)
    n = torch.randint(1, 17, (256,))
    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0)
    cd_loss = cd.consistency_loss(x, z, n, sigmas)
    ct = ConsistencyModel(mode="ct")
    ct.net, ct.target_net = cd.net, cd.target_net
    ct_loss = ct.consistency_loss(x, z, n, sigmas)
    assert cd_loss < 1e-4 and ct_loss > 100 * cd_loss, (cd_loss, ct_loss)  # measured: 1.5e-5 (Heun's error), 1.1e-2


def test_multistep_sampling_counts_one_network_call_per_step_and_is_seeded():
    model = ConsistencyModel(hidden=16, depth=2, time_dim=8)
    assert model.sample_sigmas(1).tolist() == [80.0]
    taus = model.sample_sigmas(2)
    assert taus[0] == 80.0 and abs(float(taus[1]) - ((0.002 ** (1 / 7) + 80 ** (1 / 7)) / 2) ** 7) < 1e-9
    for steps in (1, 2, 4):
        with counting(model) as count:
            x = model.sample(10, BatchRNG(3, range(10)), steps=steps)
        assert count.forward_calls == steps and x.shape == (10, 2)
        assert torch.equal(x, model.sample(10, BatchRNG(3, range(10)), steps=steps))
    assert not torch.equal(model.sample(4, BatchRNG(3, range(4)), steps=2), model.sample(4, BatchRNG(3, range(4)), steps=1))


def test_config_and_teacher_errors_say_what_to_do():
    with pytest.raises(ValueError, match="mode='ct'.*has no teacher"):
        ConsistencyModel(mode="ct", teacher_checkpoint="x.pt")
    with pytest.raises(ValueError, match="distance must be one of"):
        ConsistencyModel(distance="lpips2")
    with pytest.raises(ValueError, match="num_scales must be an int >= 2"):
        ConsistencyModel(num_scales=1)
    cd = ConsistencyModel(mode="cd")
    with pytest.raises(ValueError, match="needs its teacher: give teacher_checkpoint"):
        cd.training_step(torch.zeros(4, 2), step=0, optimizers=cd.configure_optimizers(),
                         generator=torch.Generator().manual_seed(0))
    from baselines.flow_matching import fm_vp

    with pytest.raises(ValueError, match="path ends at the data.*t_max=0.999"):
        cd.set_teacher(fm_vp())
    with pytest.raises(ValueError, match="only consistency distillation"):
        ConsistencyModel(mode="ct").set_teacher(FlowMatching())


def _exact_consistency_error(model: ConsistencyModel, sigmas: tuple[float, ...]) -> list[float]:
    """Mean ‖f(y, σ) − f*(y, σ)‖ over test points y = x + σ z of gaussian-2, per σ, where f* is the exact
    consistency function of N(m, Σ): m + (Σ + ε² I)^{1/2} (Σ + σ² I)^{-1/2} (y − m) (the PF-ODE of a
    Gaussian keeps (Σ + σ² I)^{-1/2} (x_σ − m) fixed)."""
    from harness.datasets import gaussian_density, load_dataset

    density = gaussian_density(2)
    m, cov = torch.tensor(density.mean), torch.tensor(density.cov)
    evals, evecs = torch.linalg.eigh(cov)
    x = torch.as_tensor(load_dataset("gaussian-2-test", num_samples=2000, seed=1).x, dtype=torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    errors = []
    for sigma in sigmas:
        y = x + sigma * z
        scale = evecs @ torch.diag(torch.sqrt((evals + 0.002**2) / (evals + sigma**2))) @ evecs.T
        exact = m + (y - m) @ scale.T
        with torch.no_grad():
            f = model.consistency(y.float(), torch.full((len(y),), sigma)).double()
        errors.append(float((f - exact).norm(dim=1).mean()))
    return errors


def _train(name: str, steps: int, tmp_path, **config) -> ConsistencyModel:
    from harness.runner import ModelEvalConfig, load_model
    from harness.train import TrainConfig, train

    out = tmp_path / f"{name}.pt"
    train(TrainConfig(model=name, dataset="gaussian-2-train", out=str(out), steps=steps, seed=0, num_train=5000),
          model_config={"hidden": 64, "depth": 3, "time_dim": 16, "batch_size": 256, "steps": steps, **config},
          progress=False)
    return load_model(ModelEvalConfig(dataset="gaussian-2-test", checkpoint=str(out))).model


def test_seeded_distillation_and_training_runs_approach_the_exact_consistency_function(tmp_path):
    """gaussian-2 (known mean and covariance, so the exact consistency function is known), seed 0, a
    64 x 3 MLP. Measured mean errors ‖f − f*‖ at σ = 1 and 10: untrained 0.46 and 1.25; CD of a 1,500-step
    fm-ot teacher after 1,500 steps 0.097 and 0.23; CT after 1,500 steps 0.072 and 0.91. CT's error at
    large σ is what its bootstrapping from small σ has not yet carried up, which the teacher gives CD
    directly. Thresholds: CD and CT at σ = 1, and CD at σ = 10, within twice their measured errors (at
    most half the untrained error); CT at σ = 10 more than twice CD's error."""
    sigmas = (1.0, 10.0)
    untrained = _exact_consistency_error(ConsistencyModel(hidden=64, depth=3, time_dim=16, sigma_data=1.0), sigmas)
    _train("fm-ot", 1500, tmp_path, lr=2e-3, lr_schedule="linear")
    cd = _train("consistency-cd", 1500, tmp_path, lr=1e-3, lr_schedule="linear", sigma_data=1.0,
                teacher_checkpoint=str(tmp_path / "fm-ot.pt"))
    ct = _train("consistency-ct", 1500, tmp_path, lr=1e-3, lr_schedule="linear", sigma_data=1.0, ct_s1=50)
    cd_err, ct_err = _exact_consistency_error(cd, sigmas), _exact_consistency_error(ct, sigmas)
    assert untrained[0] > 0.4 and untrained[1] > 1.0, untrained
    assert cd_err[0] < 0.2 and ct_err[0] < 0.15 and cd_err[1] < 0.45, (cd_err, ct_err)
    assert ct_err[1] > 2 * cd_err[1], (cd_err, ct_err)
