"""GAN baselines (baselines/gan.py) and the mode-collapse metrics (metrics/modes.py).

Unit checks of every loss against its paper formula on fixed tensors, weight clipping,
n_critic, config validation, checkpoint round trip and a DCGAN smoke step; exact mode metrics on
constructed samples; and one short seeded WGAN-GP run on 25gaussians evaluated by the harness.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from baselines.gan import (
    GAN,
    REGISTRY,
    GANConfig,
    clip_weights_,
    gradient_penalty,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    ns_discriminator_loss,
    ns_generator_loss,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
    wgan_gp,
)
from harness.core.densities import (
    EIGHT_GAUSSIANS,
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    TWENTYFIVE_GAUSSIANS,
    TWENTYFIVE_GAUSSIANS_CENTERS,
    TWENTYFIVE_GAUSSIANS_STD,
)
from harness.core.rng import BatchRNG
from metrics.modes import (
    assign_modes,
    high_quality_fraction,
    mode_counts,
    mode_metrics,
    mode_reverse_kl,
    modes_covered,
)


pytestmark = pytest.mark.usefixtures("one_thread")



D_REAL = torch.tensor([2.0, -1.0, 0.5, 0.0])
D_FAKE = torch.tensor([-3.0, 1.5, 0.25])


# ---------------------------------------------------------------------------------------------
# losses against the paper formulas
# ---------------------------------------------------------------------------------------------


def test_ns_losses_match_goodfellow():
    sig = torch.sigmoid
    want_d = -(torch.log(sig(D_REAL)).mean() + torch.log(1 - sig(D_FAKE)).mean())  # eq. 1, negated
    want_g = -torch.log(sig(D_FAKE)).mean()  # sec. 3, non-saturating
    assert ns_discriminator_loss(D_REAL, D_FAKE).item() == pytest.approx(want_d.item(), rel=1e-6)
    assert ns_generator_loss(D_FAKE).item() == pytest.approx(want_g.item(), rel=1e-6)
    # stable where the naive formula overflows
    assert math.isfinite(ns_discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item())


def test_wasserstein_and_lsgan_losses():
    assert wasserstein_critic_loss(D_REAL, D_FAKE).item() == pytest.approx(D_FAKE.mean() - D_REAL.mean())
    assert wasserstein_generator_loss(D_FAKE).item() == pytest.approx(-D_FAKE.mean())
    # Mao et al. 2017, eq. 2 with a=0, b=1, c=1, computed by hand
    want_d = 0.5 * np.mean([(2 - 1) ** 2, (-1 - 1) ** 2, (0.5 - 1) ** 2, 1.0]) + 0.5 * np.mean([9.0, 2.25, 0.0625])
    want_g = 0.5 * np.mean([16.0, 0.25, 0.5625])
    assert lsgan_discriminator_loss(D_REAL, D_FAKE).item() == pytest.approx(want_d)
    assert lsgan_generator_loss(D_FAKE).item() == pytest.approx(want_g)


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w + 0.3


def test_gradient_penalty_linear_critic_is_closed_form():
    # f(x) = w.x + b has gradient w everywhere: penalty = lambda (|w| - 1)^2 for any interpolate
    w = torch.tensor([3.0, 4.0])  # |w| = 5
    critic = _Linear(w)
    real, fake = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(6, 2)
    eps = torch.rand(6, generator=torch.Generator().manual_seed(1))
    gp = gradient_penalty(critic, real, fake, eps, weight=10.0)
    assert gp.item() == pytest.approx(10.0 * 16.0)
    gp.backward()  # d/dw lambda (|w| - 1)^2 = 2 lambda (|w| - 1) w / |w|
    torch.testing.assert_close(critic.w.grad, 2 * 10.0 * 4.0 * w / 5.0)


def test_gradient_penalty_uses_eps_interpolates():
    # f(x) = |x|^2 / 2 has gradient x: penalty = lambda mean((|x_hat| - 1)^2), x_hat = eps x + (1 - eps) x~
    class Quad(nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).flatten(1).sum(1)

    real = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, -4.0]])
    eps = torch.tensor([0.5, 0.25])  # x_hat = (1, 0) and (0, -2): norms 1 and 2
    assert gradient_penalty(Quad(), real, fake, eps, weight=2.0).item() == pytest.approx(2.0 * (0.0 + 1.0) / 2)


def test_weight_clipping_clips():
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.fill_(-0.5)
    clip_weights_(layer, 0.01)
    assert layer.weight.max().item() == pytest.approx(0.01) and layer.bias.min().item() == pytest.approx(-0.01)


def _batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_wgan_step_leaves_critic_clipped_and_generator_free():
    model = GAN(objective="wgan", hidden=16, depth=2, batch_size=8)
    opts = model.configure_optimizers()
    assert isinstance(opts[0], torch.optim.RMSprop)
    assert max(p.abs().max().item() for p in model.critic.parameters()) > 0.1  # default init exceeds c
    model.training_step(_batch(40), step=0, optimizers=opts, generator=torch.Generator().manual_seed(0))
    bound = max(p.abs().max().item() for p in model.critic.parameters())
    assert bound == pytest.approx(0.01)  # clipped, and some weights sit at the bound
    assert max(p.abs().max().item() for p in model.net.parameters()) > 0.1  # the generator is never clipped


@pytest.mark.parametrize("objective, n_critic", [("wgan-gp", 5), ("wgan", 5), ("ns", 1), ("lsgan", 1), ("ns", 3)])
def test_n_critic_honoured(objective, n_critic):
    model = GAN(objective=objective, hidden=16, depth=2, batch_size=8, n_critic=n_critic)
    assert model.config.n_critic == n_critic and model.default_batch_size == n_critic * 8
    opts = model.configure_optimizers()
    calls = {"critic": 0, "gen": 0}
    real_rows = []
    critic_forward = model.critic.forward

    def spy(x):
        real_rows.append(x.shape[0])
        return critic_forward(x)

    model.critic.forward = spy
    for opt, key in zip(opts, ("critic", "gen")):
        step = opt.step

        def counted(*a, _step=step, _key=key, **k):
            calls[_key] += 1
            return _step(*a, **k)

        opt.step = counted
    g = torch.Generator().manual_seed(0)
    for s in range(2):
        losses = model.training_step(_batch(8 * n_critic, s), step=s, optimizers=opts, generator=g)
    assert calls == {"critic": 2 * n_critic, "gen": 2}
    assert set(real_rows) == {8}  # every critic / generator batch is one chunk of m = 8 rows
    assert {"d_loss", "g_loss"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    if objective == "wgan-gp":
        assert {"gp", "wasserstein"} <= set(losses)


def test_linear_lr_schedule():
    model = GAN(objective="lsgan", hidden=8, depth=1, batch_size=4, lr_schedule="linear", steps=4, lr_g=1e-3, lr_d=2e-3)
    opts = model.configure_optimizers()
    model.training_step(_batch(4), step=3, optimizers=opts, generator=torch.Generator().manual_seed(0))
    assert opts[0].param_groups[0]["lr"] == pytest.approx(2e-3 / 4) and opts[1].param_groups[0]["lr"] == pytest.approx(1e-3 / 4)


def test_generator_update_does_not_touch_critic():
    model = GAN(objective="ns", hidden=16, depth=2, batch_size=8)
    opts = model.configure_optimizers()
    model.training_step(_batch(8), step=0, optimizers=opts, generator=torch.Generator().manual_seed(0))
    # the critic's grads are from its own update (the G update ran with the critic frozen)
    before = [p.detach().clone() for p in model.critic.parameters()]
    opts[0].zero_grad(set_to_none=True)
    opts[1].zero_grad(set_to_none=True)
    model.critic.requires_grad_(False)
    model.generator_loss(8, torch.Generator().manual_seed(1), _batch(1)).backward()
    model.critic.requires_grad_(True)
    assert all(p.grad is None for p in model.critic.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.critic.parameters()))


# ---------------------------------------------------------------------------------------------
# config, registry, sampling, DCGAN
# ---------------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    cfg = GANConfig(objective="wgan-gp")
    assert (cfg.arch, cfg.n_critic, cfg.lr_d, cfg.betas, cfg.gp_weight, cfg.critic_norm) == ("mlp", 5, 1e-4, (0.0, 0.9), 10.0, "layer")
    assert GANConfig(objective="wgan").optimizer == "rmsprop" and GANConfig(objective="wgan").clip == 0.01
    assert GANConfig(objective="ns", data_shape=[1, 28, 28]).arch == "dcgan"
    with pytest.raises(ValueError, match="'hinge'"):
        GANConfig(objective="hinge")
    with pytest.raises(ValueError, match="critic_norm 'batch'"):
        GANConfig(objective="wgan-gp", data_shape=(1, 28, 28), critic_norm="batch")
    with pytest.raises(ValueError, match="divisible by 4"):
        GANConfig(data_shape=(1, 30, 30))
    with pytest.raises(ValueError, match="n_critic"):
        GANConfig(n_critic=0)
    with pytest.raises(TypeError):
        GANConfig(lambda_gp=10.0)  # unknown key
    with pytest.raises(ValueError, match="objective 'wgan-gp'"):
        wgan_gp(objective="ns")


def test_factory_rebuilds_from_json_config_and_construction_leaves_global_rng():
    state = torch.random.get_rng_state()
    model = wgan_gp(hidden=16, depth=2)
    assert torch.equal(state, torch.random.get_rng_state())
    config = json.loads(json.dumps(asdict(model.config)))  # as stored in a checkpoint (tuples -> lists)
    again = wgan_gp(**config)
    assert again.config == model.config
    again.load_state_dict(model.state_dict(), strict=True)
    names = {e.name: e for e in REGISTRY}
    assert set(names) == {"ns-gan", "wgan", "wgan-gp", "lsgan"} and {e.family for e in REGISTRY} == {"gan"}
    for entry in REGISTRY:
        built = entry.build(entry.tiny_config)
        assert isinstance(built, GAN) and built.data_spec.shape == (2,)


def test_samples_do_not_depend_on_batch():
    model = GAN(objective="ns", hidden=16, depth=2)
    a = model.sample(6, BatchRNG(3, range(6)))
    b = model.sample(2, BatchRNG(3, [4, 5]))
    assert a.shape == (6, 2)
    torch.testing.assert_close(a[4:], b)


def test_dcgan_shapes_and_one_step():
    for objective in ("ns", "wgan-gp"):
        model = GAN(objective=objective, data_shape=(1, 28, 28), base_channels=8, latent_dim=16, batch_size=4)
        assert model.config.arch == "dcgan" and model.data_spec.value_range == (-1.0, 1.0)
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.critic.modules())
        assert has_bn == (objective != "wgan-gp")  # Gulrajani et al.: no BatchNorm in the WGAN-GP critic
        opts = model.configure_optimizers()
        batch = torch.rand(model.default_batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
        losses = model.training_step(batch, step=0, optimizers=opts, generator=torch.Generator().manual_seed(0))
        assert all(math.isfinite(v) for v in losses.values())
        model.eval()
        x = model.sample(3, BatchRNG(0, range(3)))
        assert x.shape == (3, 1, 28, 28) and x.abs().max() < 1.0
        # batch independence with BatchNorm in G: sampling runs G in eval mode
        model.train()
        torch.testing.assert_close(model.sample(3, BatchRNG(0, range(3)))[2:], model.sample(1, BatchRNG(0, [2])))
        assert model.net.training


# ---------------------------------------------------------------------------------------------
# mode metrics (exact on constructed samples)
# ---------------------------------------------------------------------------------------------


def test_mode_metrics_exact_on_constructed_samples():
    centers, std = TWENTYFIVE_GAUSSIANS_CENTERS, TWENTYFIVE_GAUSSIANS_STD
    # 10 samples on mode 0 exactly, 4 at 2.9 sigma of mode 7, 3 at 3.1 sigma of mode 7 (not high
    # quality), 1 at 2.9 sigma of mode 24, 2 half-way between modes 12 and 13 (low quality)
    off = np.array([1.0, 0.0]) * std
    samples = np.concatenate([
        np.repeat(centers[[0]], 10, 0),
        np.repeat(centers[[7]] + 2.9 * off, 4, 0),
        np.repeat(centers[[7]] - 3.1 * off, 3, 0),
        centers[[24]] + 2.9 * off[::-1],
        np.repeat((centers[[12]] + centers[[13]]) / 2, 2, 0),
    ])
    idx, dist = assign_modes(samples, centers)
    assert idx[:10].tolist() == [0] * 10 and idx[10:17].tolist() == [7] * 7 and idx[17] == 24
    np.testing.assert_allclose(dist[10:14], 2.9 * std)
    counts = mode_counts(samples, centers, std)
    assert counts.sum() == 15 and counts[0] == 10 and counts[7] == 4 and counts[24] == 1
    assert modes_covered(samples, centers, std) == 3
    assert modes_covered(samples, centers, std, min_count=4) == 2
    assert modes_covered(samples, centers, std, threshold_std=3.2) == 3
    assert high_quality_fraction(samples, centers, std) == pytest.approx(15 / 20)
    assert high_quality_fraction(samples, centers, std, threshold_std=3.2) == pytest.approx(18 / 20)
    q = np.array([10, 4, 1]) / 15
    assert mode_reverse_kl(samples, centers, std) == pytest.approx(float((q * np.log(q * 25)).sum()))
    record = mode_metrics(torch.as_tensor(samples, dtype=torch.float32), TWENTYFIVE_GAUSSIANS)
    assert record["modes_covered"]["value"] == 3 and record["modes_covered"]["num_modes"] == 25
    assert record["modes_covered"]["threshold_std"] == 3.0
    assert record["high_quality_fraction"]["value"] == pytest.approx(0.75)


def test_mode_metrics_perfect_and_collapsed_and_other_data():
    centers, std = EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD
    rng = np.random.default_rng(0)
    perfect = np.repeat(centers, 50, 0) + std * np.clip(rng.standard_normal((400, 2)), -2, 2)  # within 2.83 sigma
    record = mode_metrics(perfect, EIGHT_GAUSSIANS)
    assert record["modes_covered"]["value"] == 8 and record["high_quality_fraction"]["value"] == 1.0
    assert record["mode_reverse_kl"]["value"] == pytest.approx(0.0, abs=1e-12)
    collapsed = np.repeat(centers[[3]], 30, 0)
    assert mode_reverse_kl(collapsed, centers, std) == pytest.approx(math.log(8))
    assert modes_covered(collapsed, centers, std) == 1
    assert mode_reverse_kl(np.zeros((5, 2)), centers, std) == math.inf  # nothing high quality
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        modes_covered(np.zeros((3, 3)), centers, std)


# ---------------------------------------------------------------------------------------------
# a short seeded training run on 25gaussians, trained and evaluated by the harness
# ---------------------------------------------------------------------------------------------

# The run: WGAN-GP (Gulrajani et al. 2017 toy setting, scaled down for a shared CPU), with the
# harness EMA of the weights. Everything is seeded, so the numbers are deterministic on one
# machine; thresholds below carry a margin for BLAS / platform differences.
QUALITY_CONFIG = {"hidden": 128, "depth": 3, "latent_dim": 2, "batch_size": 64, "lr_g": 1e-3, "lr_d": 1e-3,
                  "betas": [0.5, 0.9], "gp_weight": 0.1, "data_scale": 2.83, "ema_decay": 0.99,
                  "lr_schedule": "linear", "steps": 600}
QUALITY_STEPS = 600
# Measured (1000 samples; modes: PacGAN rule, >= 1 sample within 3 sigma = 0.15 of a center):
#   seed 0 (this test): 23/25 modes, high-quality fraction 0.111, precision 0.115, recall 0.960, FID 0.031
#   seeds 1 / 2:        19 / 21 modes, hq 0.070 / 0.091, precision 0.075 / 0.088, recall 0.953 / 0.968
#   untrained generator (same config): 0 modes, hq 0.000.
# 600 generator updates (~20 s CPU) are far from converged (Gulrajani et al. train 100k): the
# samples cover nearly every mode but most still lie between modes, hence the low hq fraction
# and k-NN precision (the real 25gaussians balls are tiny). Thresholds sit below the worst of
# the three seeds, so a platform change in float rounding does not flip the test, while any
# broken loss / update (untrained level: 0 modes, hq 0) fails it.
MIN_MODES, MIN_HQ, MIN_PRECISION, MIN_RECALL = 17, 0.05, 0.05, 0.85


def test_wgan_gp_learns_25gaussians(tmp_path):
    from harness.runner import ModelEvalConfig, evaluate_model, load_model
    from harness.train import TrainConfig, train

    ckpt = tmp_path / "wgan-gp.pt"
    summary = train(TrainConfig(model="wgan-gp", dataset="25gaussians-train", out=str(ckpt), steps=QUALITY_STEPS, seed=0),
                    model_config=QUALITY_CONFIG, progress=False)
    assert summary["steps"] == QUALITY_STEPS
    cfg = ModelEvalConfig(dataset="25gaussians-test", checkpoint=str(ckpt), num_samples=1000, metrics=("fid", "prdc"),
                          batch_size=500, use_cache=False)
    record = evaluate_model(cfg, progress=False)
    m = record["metrics"]
    model = load_model(cfg).model
    samples = torch.cat([model.sample(500, BatchRNG(0, range(lo, lo + 500))) for lo in (0, 500)])
    modes = mode_metrics(samples, TWENTYFIVE_GAUSSIANS)
    untrained = GAN(**{**QUALITY_CONFIG, "objective": "wgan-gp"})
    base = mode_metrics(untrained.sample(1000, BatchRNG(0, range(1000))), TWENTYFIVE_GAUSSIANS)
    print(f"\nwgan-gp 25gaussians {QUALITY_STEPS} steps: {modes['modes_covered']['value']}/25 modes, "
          f"hq={modes['high_quality_fraction']['value']:.3f}, rkl={modes['mode_reverse_kl']['value']:.3f}, "
          f"precision={m['precision']['value']:.3f}, recall={m['recall']['value']:.3f}, fid={m['fid']['value']:.3f}; "
          f"untrained: {base['modes_covered']['value']} modes, hq={base['high_quality_fraction']['value']:.3f}")
    # thresholds and the measured values: see MIN_MODES above
    assert modes["modes_covered"]["value"] >= MIN_MODES
    assert modes["high_quality_fraction"]["value"] >= MIN_HQ
    assert m["precision"]["value"] >= MIN_PRECISION and m["recall"]["value"] >= MIN_RECALL
    assert base["high_quality_fraction"]["value"] < MIN_HQ / 2  # the untrained generator is far below


# The same scaled-down setting for the non-saturating and least-squares objectives (one critic step,
# no penalty), seed 0, 600 generator steps. Measured over seeds 0 / 1 / 2 (1000 samples):
#   ns-gan: 4 / 7 / 12 modes, hq 0.033 / 0.013 / 0.021, precision 0.032 / 0.015 / 0.017,
#           recall 0.117 / 0.959 / 0.963, FD 6.78 / 0.53 / 0.072 (seed 0 collapses onto a few modes:
#           the mode collapse the literature attributes to the JS objective)
#   lsgan:  21 / 16 / 18 modes, hq 0.069 / 0.026 / 0.082, precision 0.078 / 0.024 / 0.092,
#           recall 0.928 / 0.881 / 0.981, FD 0.024 / 0.123 / 0.036
# Thresholds sit below the worst seed of each (the untrained generator: 0 modes, hq 0).
OBJECTIVE_FLOORS = {"ns-gan": {"modes_covered": 3, "high_quality_fraction": 0.008},
                    "lsgan": {"modes_covered": 12, "high_quality_fraction": 0.015, "recall": 0.8}}


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_FLOORS))
def test_ns_gan_and_lsgan_learn_25gaussians(tmp_path, objective):
    from harness.runner import ModelEvalConfig, evaluate_model
    from harness.train import TrainConfig, train

    ckpt = tmp_path / f"{objective}.pt"
    config = {k: v for k, v in QUALITY_CONFIG.items() if k != "gp_weight"}
    train(TrainConfig(model=objective, dataset="25gaussians-train", out=str(ckpt), steps=QUALITY_STEPS, seed=0),
          model_config=config, progress=False)
    cfg = ModelEvalConfig(dataset="25gaussians-test", checkpoint=str(ckpt), num_samples=1000, metrics=("fid", "prdc"),
                          batch_size=500, use_cache=False)
    m = evaluate_model(cfg, progress=False)["metrics"]
    for key, floor in OBJECTIVE_FLOORS[objective].items():
        assert m[key]["value"] >= floor, (objective, key, m[key]["value"])
