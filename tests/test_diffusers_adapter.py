"""The diffusers UNet adapter: offline loading, DDPM/DDIM sampling, pipeline seeding, NFE, record, PF-ODE mapping."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers")

from harness.adapters.diffusers_unet import DiffusersUNet, load_diffusers_unet, weights_sha256  # noqa: E402
from harness.convert import samples_to_data  # noqa: E402
from harness.core.nfe import counting  # noqa: E402
from harness.core.protocols import ProbabilityFlow, Sampler  # noqa: E402
from harness.core.rng import BatchRNG, example_seed  # noqa: E402

N_TRAIN = 10


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_unet() -> torch.nn.Module:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


def _save(root: Path, **scheduler_kwargs: object) -> Path:
    from diffusers import DDPMScheduler

    _tiny_unet().save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=N_TRAIN, **scheduler_kwargs).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DDPMPipeline-style directory: unet/ + scheduler/ (10 train timesteps, linear betas)."""
    return _save(tmp_path_factory.mktemp("tiny-ddpm"))


@pytest.fixture(scope="module")
def model(model_dir: Path) -> DiffusersUNet:
    return load_diffusers_unet(str(model_dir))


def test_loads_offline_with_capabilities(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = load_diffusers_unet(model_dir, sampler="ddim", steps=4)
    assert isinstance(m, Sampler) and isinstance(m, ProbabilityFlow)
    assert m.data_spec.shape == (1, 8, 8) and m.data_spec.value_range == (-1.0, 1.0)
    assert m.t_span == (1e-5, 1.0)
    info = m.describe()
    assert info["scheduler_class"] == "DDPMScheduler" and info["num_train_timesteps"] == N_TRAIN
    assert (info["sampler"], info["steps"], info["beta_schedule"], info["prediction_type"]) == ("ddim", 4, "linear", "epsilon")
    assert info["pf_ode"]["mapping"] == "linear" and 0 < info["pf_ode"]["alpha_bar_at_prior_time"] < 1
    json.dumps(info)


@pytest.mark.parametrize("scheduler_at", ["scheduler", "."])
def test_flat_layouts(model_dir: Path, tmp_path: Path, scheduler_at: str) -> None:
    for f in (model_dir / "unet").iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / scheduler_at).mkdir(exist_ok=True)
    shutil.copy(model_dir / "scheduler" / "scheduler_config.json", tmp_path / scheduler_at)
    assert load_diffusers_unet(tmp_path).num_train_timesteps == N_TRAIN


def test_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*save_pretrained"):
        load_diffusers_unet(tmp_path / "missing")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a diffusers.*weights\.pt.*DIR/unet/"):
        load_diffusers_unet(tmp_path)
    vpred = _save(tmp_path / "vpred", prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type='epsilon'.*v_prediction"):
        load_diffusers_unet(vpred)
    (vpred / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match="cannot load"):
        load_diffusers_unet(vpred)
    with pytest.raises(ValueError, match="sampler must be one of"):
        load_diffusers_unet(model_dir, sampler="euler")
    with pytest.raises(ValueError, match=r"steps must be in \[1, num_train_timesteps=10\]"):
        load_diffusers_unet(model_dir, sampler="ddim", steps=11)
    with pytest.raises(ValueError, match="seeding must be one of"):
        load_diffusers_unet(model_dir, seeding="numpy")


def test_missing_diffusers_says_how_to_install(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match="pip install diffusers"):
        load_diffusers_unet(model_dir)


@pytest.mark.parametrize(("sampler", "steps", "seeding"),
                         [("ddpm", None, "genbench"), ("ddpm", None, "diffusers"), ("ddim", 5, "genbench")])
def test_sampling_nfe_batch_independence_determinism(model: DiffusersUNet, sampler: str, steps: int | None,
                                                     seeding: str) -> None:
    with counting(model) as count:
        x = model.sample(4, BatchRNG(0, range(4)), sampler=sampler, steps=steps, seeding=seeding)
    assert count.forward_calls == (steps or N_TRAIN)
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0 + 1e-6  # clip_sample=True clips the x0 prediction
    alone = model.sample(1, BatchRNG(0, [2]), sampler=sampler, steps=steps, seeding=seeding)
    torch.testing.assert_close(alone[0], x[2], rtol=0, atol=1e-5)
    other_seed = model.sample(1, BatchRNG(1, [2]), sampler=sampler, steps=steps, seeding=seeding)
    assert not torch.allclose(other_seed[0], x[2])


def _pipeline_uint8(model: DiffusersUNet, sampler: str, steps: int, seed: int, indices: list[int]) -> torch.Tensor:
    """uint8 [B, C, H, W] from diffusers' own pipeline, one CPU generator per example seeded with example_seed."""
    from diffusers import DDIMPipeline, DDPMPipeline, DDPMScheduler

    pipeline_class = DDPMPipeline if sampler == "ddpm" else DDIMPipeline
    pipe = pipeline_class(unet=model.net, scheduler=DDPMScheduler.from_config(model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(example_seed(seed, i)) for i in indices]
    images = pipe(batch_size=len(indices), generator=generators, num_inference_steps=steps, output_type="np").images
    return torch.from_numpy((images * 255).round().astype("uint8")).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("sampler", "steps", "seeding"), [("ddpm", N_TRAIN, "diffusers"), ("ddpm", 4, "diffusers"),
                                                           ("ddim", 5, "diffusers"), ("ddim", 5, "genbench")])
def test_diffusers_seeding_reproduces_pipeline_uint8(model: DiffusersUNet, sampler: str, steps: int,
                                                    seeding: str) -> None:
    """seeding="diffusers" gives DDPMPipeline's / DDIMPipeline's images for generators seeded with example_seed."""
    seed, indices = 3, [0, 1, 5, 7]
    ours = model.sample(len(indices), BatchRNG(seed, indices), sampler=sampler, steps=steps, seeding=seeding)
    reference = _pipeline_uint8(model, sampler, steps, seed, indices)
    assert torch.equal(samples_to_data(ours, model.data_spec), reference)


def test_genbench_seeding_differs_from_pipeline_for_ddpm(model: DiffusersUNet) -> None:
    """The default draws DDPM's step noise from its own stream, so it does not reproduce DDPMPipeline."""
    ours = samples_to_data(model.sample(4, BatchRNG(3, range(4))), model.data_spec)
    assert (ours == _pipeline_uint8(model, "ddpm", N_TRAIN, 3, list(range(4)))).float().mean() < 0.5


def test_describe_records_configs_weights_hash_and_steps(model_dir: Path, model: DiffusersUNet) -> None:
    info = model.describe()
    assert info["steps"] == N_TRAIN and info["sampler"] == "ddpm" and info["seeding"] == "genbench"
    assert type(info["scheduler_config"]) is dict and info["scheduler_config"]["num_train_timesteps"] == N_TRAIN
    assert info["scheduler_config"] == json.loads(json.dumps(info["scheduler_config"]))
    assert type(info["unet_config"]) is dict and info["unet_config"]["block_out_channels"] == [8, 16]
    assert {"beta(t)", "timestep", "alpha_bar_at_prior_time"} <= set(info["pf_ode"])
    assert info["unet_sha256"] == weights_sha256(_tiny_unet()) and len(info["unet_sha256"]) == 64
    changed = load_diffusers_unet(model_dir, seeding="diffusers")
    with torch.no_grad():
        next(changed.net.parameters()).view(-1)[0] += 1.0
    assert changed.describe()["unet_sha256"] != info["unet_sha256"] and changed.describe()["seeding"] == "diffusers"
    assert model.sampling_settings() == {"sampler": "ddpm", "steps": N_TRAIN, "seeding": "genbench"}
    ddim = {"sampler": "ddim", "steps": N_TRAIN, "seeding": "diffusers"}  # min(50, N) DDIM steps
    assert model.sampling_settings(sampler="ddim", seeding="diffusers") == ddim


@pytest.mark.parametrize("sample_options", [{}, {"seeding": "diffusers"}])
def test_record_has_describe_and_steps_that_ran(model_dir: Path, sample_options: dict[str, str]) -> None:
    """The record's model section holds describe(); its sampling section the sampler / steps / seeding that ran."""
    from harness.runner import ModelEvalConfig, draw_samples, load_model

    cfg = ModelEvalConfig(dataset="unused", model="diffusers-unet", model_args={"path": str(model_dir)}, num_samples=2,
                          sample_options=sample_options)
    loaded = load_model(cfg)
    described = loaded.description["describe"]
    assert described["unet_sha256"] == weights_sha256(_tiny_unet())
    assert described["scheduler_config"]["num_train_timesteps"] == N_TRAIN and described["pf_ode"]["mapping"] == "linear"
    json.dumps(loaded.description)
    _, info = draw_samples(loaded.model, cfg, progress=False)
    assert (info["sampler"], info["steps"], info["nfe_per_sample"]) == ("ddpm", N_TRAIN, N_TRAIN)
    assert info["seeding"] == sample_options.get("seeding", "genbench")


def test_ode_drift_and_prior(model: DiffusersUNet) -> None:
    x = BatchRNG(0, range(3)).normal((1, 8, 8))
    t = torch.tensor([model.t_span[0], 0.5, 1.0])
    drift = model.ode_drift(x, t)
    assert drift.shape == x.shape and torch.isfinite(drift).all()
    with counting(model) as count:
        model.ode_drift(x, t)
    assert count.forward_calls == 1
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.prior_log_prob(x), expected)
    assert model.prior_log_prob(x).shape == (3,) and abs(float(model.prior_log_prob(torch.zeros(1, 64))) + 32 * math.log(2 * math.pi)) < 1e-4


@pytest.mark.parametrize(("n", "mapping", "rel_tol"), [
    (50, "piecewise", 1e-6), (1000, "piecewise", 1e-6),  # exact up to float32 betas
    (50, "linear", 5e-3), (1000, "linear", 0.08),  # score_sde's linear β(t): first order in β only
])
def test_beta_mapping_reproduces_alphas_cumprod(n: int, mapping: str, rel_tol: float) -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=n)
    m = DiffusersUNet(_tiny_unet(), dict(scheduler.config), pf_ode=mapping)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    beta, alpha_bar = m.vp_schedule(grid)
    reference = scheduler.alphas_cumprod.to(torch.float64)
    assert ((alpha_bar - reference).abs() / reference).max() < rel_tol
    assert (beta > 0).all()
    if mapping == "piecewise":
        torch.testing.assert_close(m.network_timestep(grid), torch.arange(n, dtype=torch.float64))


def test_non_linear_schedule_uses_piecewise_mapping() -> None:
    from diffusers import DDPMScheduler

    config = dict(DDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2").config)
    assert DiffusersUNet(_tiny_unet(), config).pf_ode == "piecewise"
    with pytest.raises(ValueError, match="pf_ode='linear' needs beta_schedule='linear'"):
        DiffusersUNet(_tiny_unet(), config, pf_ode="linear")


def test_entry_point(model_dir: Path) -> None:
    from harness.models import load_entry_point

    m = load_entry_point("harness.adapters.diffusers_unet:load_diffusers_unet", path=str(model_dir), sampler="ddim", steps=2)
    assert isinstance(m, DiffusersUNet) and m.steps == 2


def test_pf_ode_bits_per_dim_is_finite(model: DiffusersUNet) -> None:
    likelihood_ode = pytest.importorskip("metrics.likelihood_ode")
    x = BatchRNG(0, range(2), stream="data").uniform((1, 8, 8)) * 2 - 1
    config = likelihood_ode.ODELikelihoodConfig(divergence="hutchinson", solver="euler", steps=10)
    bpd, result = likelihood_ode.ode_bpd(model, x, config=config, rng=BatchRNG(0, range(2)), offset_bits=7.0)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    assert result.forward_calls == 10 and result.nfe.tolist() == [10, 10]


class _GaussianOracle(torch.nn.Module):
    """The exact ε-network for data N(0, s² I) under the adapter's own VP schedule (linear mapping).

    x_t = sqrt(ᾱ) x_0 + σ ε has p_t = N(0, v_t I), v_t = ᾱ s² + σ², so ε*(x, t) = σ(t) x / v_t.
    """

    def __init__(self, s: float, num_train_timesteps: int) -> None:
        super().__init__()
        self.config = {"in_channels": 1, "out_channels": 1, "sample_size": 2}
        self.s, self.n = s, num_train_timesteps
        self.schedule: object = None  # the adapter's vp_schedule, set after construction

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        _, alpha_bar = self.schedule(timestep / (self.n - 1))
        sigma, var = (1 - alpha_bar).sqrt(), alpha_bar * self.s**2 + 1 - alpha_bar
        return SimpleNamespace(sample=(sigma / var).to(x.dtype).view(-1, 1, 1, 1) * x)


def test_pf_ode_with_exact_epsilon_recovers_gaussian_log_density() -> None:
    """Drift -½β(x - ε/σ) with the exact ε transports N(0, v(t0)) to N(0, v(1)) (Song et al. 2021, eq. 13)."""
    from diffusers import DDPMScheduler

    likelihood_ode = pytest.importorskip("metrics.likelihood_ode")
    oracle = _GaussianOracle(s=0.5, num_train_timesteps=1000)
    m = DiffusersUNet(oracle, dict(DDPMScheduler(num_train_timesteps=1000).config))
    oracle.schedule = m.vp_schedule
    x = BatchRNG(0, range(3), stream="data").normal((1, 2, 2), dtype=torch.float64) * 0.5
    config = likelihood_ode.ODELikelihoodConfig(divergence="exact", solver="dopri5", rtol=1e-8, atol=1e-8)
    result = likelihood_ode.ode_log_likelihood(m, x, config=config, rng=BatchRNG(0, range(3)))
    var = [float(0.25 * a + 1 - a) for a in m.vp_schedule(torch.tensor(m.t_span))[1]]
    gauss = lambda v, y: torch.distributions.Normal(0.0, math.sqrt(v)).log_prob(y).flatten(1).sum(1)  # noqa: E731
    torch.testing.assert_close(result.delta_log_prob + gauss(var[1], result.z), gauss(var[0], x), rtol=0, atol=1e-5)
