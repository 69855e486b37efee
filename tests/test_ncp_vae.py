"""NCP-VAE: SIR against a closed-form tilted Gaussian, the log Z estimator, the classifier's optimum,
the bound's reduction to the VAE's, config validation, batch invariance and a seeded 25-Gaussians run."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.ncp_vae import NCPVAE, effective_sample_size, estimate_log_normaliser, sir, sir_select
from harness.core.protocols import capabilities
from harness.core.rng import BatchRNG

pytestmark = pytest.mark.usefixtures("one_thread")

_TINY = {"vae": {"hidden": 16, "depth": 1}, "classifier_hidden": 8, "classifier_depth": 1, "ncp_start": 2,
         "steps": 4, "num_normaliser_samples": 1000}


def _tilted_sir(a: float, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """n SIR draws [n] from N(0, 1) reweighted by r(z) = exp(a z), with M = m proposals each."""
    rng = BatchRNG(seed, range(n))
    proposals = rng.child("latent").normal((m, 1), dtype=torch.float64)
    z, ess = sir(lambda z: a * z[:, 0], proposals, rng.child("select").uniform(()))
    assert z.shape == (n, 1) and ess.shape == (n,) and bool(((ess >= 1 - 1e-9) & (ess <= m + 1e-9)).all())
    return z[:, 0]


def test_sir_reproduces_the_exponentially_tilted_gaussian_and_gives_the_prior_at_one_proposal():
    # N(0, 1) · exp(a z) / Z = N(a, 1) exactly (Z = exp(a²/2)). SIR's bias is O(1/M); at M = 2000 it is
    # far below the sampling error 1/√n of the mean (4 standard errors: 0.063 at n = 4000).
    a, n = 1.0, 4000
    mean_tol, var_tol = 4 / math.sqrt(n), 4 * math.sqrt(2 / n)
    prior = _tilted_sir(a, 1, n)
    assert abs(float(prior.mean())) < mean_tol and abs(float(prior.var()) - 1) < var_tol
    many = _tilted_sir(a, 2000, n)
    assert abs(float(many.mean()) - a) < mean_tol and abs(float(many.var()) - 1) < var_tol
    few = float(_tilted_sir(a, 4, n).mean())  # on the way: between the prior's mean and the target's
    assert mean_tol < few < a - mean_tol


def test_sir_select_is_the_inverse_cdf_of_the_normalised_weights_and_ess_is_kish():
    log_w = torch.log(torch.tensor([[1.0, 0.0, 3.0]])).expand(8, 3) + 5.0  # a constant (log Z) cancels
    u = torch.arange(8, dtype=torch.float64) / 8  # CDF 0.25, 0.25, 1.0
    assert sir_select(log_w, u).tolist() == [0, 0, 2, 2, 2, 2, 2, 2]
    ess = effective_sample_size(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -1e4, -1e4, -1e4], [math.log(3.0), 0.0, -1e4, -1e4]]))
    assert torch.allclose(ess, torch.tensor([4.0, 1.0, 16 / 10], dtype=torch.float64))
    with pytest.raises(ValueError, match="log_weights"):
        sir_select(log_w[0], u)


def test_log_normaliser_estimate_matches_the_tilted_gaussian_within_its_standard_error():
    # r(z) = exp(a z), z ~ N(0, 1): Z = exp(a²/2); se(log Ẑ) ≈ sqrt(exp(a²) − 1) / √N (delta method)
    a, n = 1.0, 100_000
    log_z, se = estimate_log_normaliser(lambda z: a * z[:, 0], 1, num_samples=n, seed=3)
    assert se == pytest.approx(math.sqrt(math.exp(a * a) - 1) / math.sqrt(n), rel=0.2)
    assert abs(log_z - a * a / 2) < 4 * se
    # fixed seed: the same estimate every time (it is cached in checkpoints and recomputed identically)
    assert estimate_log_normaliser(lambda z: a * z[:, 0], 1, num_samples=n, seed=3) == (log_z, se)


def test_the_classifier_learns_the_log_density_ratio_of_two_known_gaussians():
    # q = N(μ, 1) (label 1) vs p = N(0, 1) (label 0): the optimal logit is log q/p = μ z − μ²/2.
    mu = 1.0
    model = NCPVAE(vae={"latent_dim": 1, "hidden": 8, "depth": 1}, classifier_hidden=32, classifier_depth=2,
                   classifier_lr=3e-3)
    opt = model.configure_optimizers()[1]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < 800 else 0.2)
    g = torch.Generator().manual_seed(0)
    for _ in range(1200):
        z_pos = mu + torch.randn(1024, 1, generator=g)
        z_neg = torch.randn(1024, 1, generator=g)
        model.classifier_update(z_pos, z_neg, opt)
        sched.step()
    grid = torch.linspace(-2.0, 3.0, 51)[:, None]
    with torch.no_grad():
        err = (model.log_r(grid) - (mu * grid[:, 0] - mu * mu / 2)).abs()
    assert float(err.max()) < 0.2  # measured: max 0.124, mean 0.023 on the grid
    # and the normaliser of r = q/p is E_p[q/p] = 1
    log_z, se = model.refresh_normaliser()
    assert abs(log_z) < 0.05  # measured: -0.020 ± 0.004


def test_with_r_identically_one_the_bound_is_the_vaes_and_a_constant_logit_cancels_through_z():
    model = NCPVAE(**_TINY)  # the classifier's last layer starts at zero: r ≡ 1
    x = torch.randn(6, 2)
    for k in (1, 4):
        ours = model.elbo(x, num_importance=k, rng=BatchRNG(2, range(6)))
        theirs = model.vae.elbo(x, num_importance=k, rng=BatchRNG(2, range(6)))
        assert torch.equal(ours, theirs)
    assert model.refresh_normaliser() == (0.0, 0.0)
    with torch.no_grad():
        model.net.body[-1].bias.fill_(0.7)  # r ≡ e^0.7: p_NCP = p, log Ẑ = 0.7 exactly
    assert model.refresh_normaliser()[0] == pytest.approx(0.7)
    for k in (1, 4):
        ours = model.elbo(x, num_importance=k, rng=BatchRNG(2, range(6)))
        assert torch.allclose(ours, model.vae.elbo(x, num_importance=k, rng=BatchRNG(2, range(6))), atol=1e-5)
    with pytest.raises(ValueError, match="num_importance"):
        model.elbo(x, num_importance=0, rng=BatchRNG(2, range(6)))


def test_config_validation_and_capabilities():
    assert capabilities(NCPVAE(**_TINY)) == ["Sampler", "LowerBound"]
    for bad, match in (({"vae": {"hiden": 3}}, "unknown VAEConfig keys"), ({"vae": {"seed": 1}}, "ncp-vae itself"),
                       ({"vae": {"likelihood": "bernoulli"}}, "likelihood"), ({"ncp_start": 1.5}, "ncp_start"),
                       ({"ncp_start": 4}, "never train"), ({"sir_proposals": 0}, "sir_proposals"),
                       ({"num_normaliser_samples": 1}, "num_normaliser_samples"), ({"classifier_lr": 0.0}, "classifier_lr"),
                       ({"ema_decay": 1.0}, "ema_decay")):
        with pytest.raises(ValueError, match=match):
            NCPVAE(**{**_TINY, **bad})
    with pytest.raises(TypeError):
        NCPVAE(proposals=5)
    assert NCPVAE(**{**_TINY, "ncp_start": 0.5}).config.ncp_start_step == 2


def test_sampling_does_not_depend_on_the_batch_counts_m_classifier_calls_and_m1_is_the_vae():
    from harness.core.nfe import counting

    model = NCPVAE(**{**_TINY, "sir_proposals": 16})
    with torch.no_grad():
        model.net.body[-1].weight.normal_(generator=torch.Generator().manual_seed(0))  # a non-trivial r
    whole = model.sample(6, BatchRNG(5, range(6)))
    parts = torch.cat([model.sample(2, BatchRNG(5, [0, 1])), model.sample(4, BatchRNG(5, range(2, 6)))])
    # same proposals and choices; the MLPs' float sums may differ in the last bit between batch shapes
    assert torch.allclose(whole, parts, atol=1e-5) and whole.dtype == torch.float32 and whole.shape == (6, 2)
    assert torch.equal(model.sample(6, BatchRNG(5, range(6))), whole)
    assert 1.0 <= model.last_sir_ess <= 16.0
    assert torch.allclose(model.sir_ess(6, BatchRNG(5, range(6))).mean(), torch.tensor(model.last_sir_ess, dtype=torch.float64))
    assert torch.equal(model.sample(6, BatchRNG(5, range(6)), proposals=1), model.vae.sample(6, BatchRNG(5, range(6))))
    with counting(model) as count:
        model.sample(5, BatchRNG(0, range(5)), proposals=7)
    assert count.forward_calls == 1 and count.examples == 5 * 7  # NFE per sample = M
    with pytest.raises(ValueError, match="proposals"):
        model.sample(2, BatchRNG(0, range(2)), proposals=0)


def test_phase_one_is_a_vae_2d_run_and_the_checkpoint_carries_log_z(tmp_path):
    from harness.checkpoint import load_checkpoint
    from harness.models import build_registered
    from harness.train import TrainConfig, train

    vae_cfg = {"hidden": 16, "depth": 1}
    train(TrainConfig(model="ncp-vae", dataset="moons-train", out=str(tmp_path / "ncp.pt"), steps=8, seed=1, num_train=512),
          model_config={"vae": vae_cfg, "ncp_start": 5, "steps": 8, "batch_size": 64, "classifier_hidden": 8,
                        "num_normaliser_samples": 2000}, progress=False)
    train(TrainConfig(model="vae-2d", dataset="moons-train", out=str(tmp_path / "vae.pt"), steps=5, seed=1, num_train=512),
          model_config={**vae_cfg, "batch_size": 64}, progress=False)
    ncp, vae = load_checkpoint(tmp_path / "ncp.pt"), load_checkpoint(tmp_path / "vae.pt")
    for name, value in vae.state_dict.items():
        assert torch.equal(ncp.state_dict[f"vae.{name}"], value), name
    model = build_registered("ncp-vae", ncp.config)
    model.load_state_dict(ncp.state_dict)
    assert int(model.normaliser_key) == model._classifier_key() != 0  # computed at the last step, not again
    assert float(model.log_normaliser) != 0.0 and float(model.log_normaliser_se) > 0


def test_seeded_training_on_25gaussians_fills_fewer_prior_holes_than_the_plain_vae(tmp_path):
    """NCP-i in small: the same VAE, sampled through SIR on the NCP prior, puts more samples near a mode.

    VAE: latent 2, 3 x 128 SiLU, Adam 2e-3, 3,000 steps of batch 256 on 5,000 rows; then 1,000
    classifier steps (3 x 128, Adam 1e-3). Decoder means as samples (``sample_noise=False``: the learned
    decoder σ is wider than the 3σ = 0.15 mode radius). 500 test rows / samples, M = 50.
    Measured (init seed 0 / 1, train seed 0): high-quality fraction 0.150 / 0.158 (NCP, M = 50),
    0.103 / 0.124 (M = 500) vs 0.058 / 0.066 (plain prior); elbo_bpd 2.873 / 2.780 vs 3.106 / 3.126;
    MMD² 0.0100 / 0.0098 vs 0.0125 / 0.0122; modes covered 18 / 21 vs 15 / 17; log Ẑ 0.0167 ± 0.0025 /
    0.0106 ± 0.0028; mean SIR ESS 31.3 / 29.1 of 50. With 2 x 64 units, or 500 classifier steps, the
    classifier learns almost nothing (loss 1.37-1.38 of 2 log 2 = 1.386) and NCP does not help.
    """
    import dataclasses

    from harness.checkpoint import load_checkpoint, save_checkpoint
    from harness.models import build_registered
    from harness.runner import ModelEvalConfig, evaluate_model
    from harness.train import TrainConfig, train

    out = tmp_path / "ncp.pt"
    config = {"vae": {"hidden": 128, "depth": 3, "sample_noise": False, "lr": 2e-3}, "ncp_start": 3000, "steps": 4000}
    train(TrainConfig(model="ncp-vae", dataset="25gaussians-train", out=str(out), seed=0, num_train=5000),
          model_config=config, progress=False)
    ckpt = load_checkpoint(out)
    model = build_registered("ncp-vae", ckpt.config)
    model.load_state_dict(ckpt.state_dict)
    plain = tmp_path / "vae.pt"  # the same VAE with its plain N(0, I) prior, as a vae-2d checkpoint
    save_checkpoint(plain, model_name="vae-2d", config=dataclasses.asdict(model.vae.config),
                    state_dict=model.vae.state_dict(), meta={})

    def evaluate(path, **options):
        record = evaluate_model(ModelEvalConfig(dataset="25gaussians-test", checkpoint=str(path), num_samples=500,
                                                metrics=("elbo_bpd", "modes", "mmd"), feature_extractor="identity",
                                                sample_options=options, replicates=0), progress=False)
        return {k: v["value"] for k, v in record["metrics"].items()}, record

    (ncp, record), (vae, _) = evaluate(out, proposals=50), evaluate(plain)
    assert record["model"]["describe"]["log_normaliser_se"] > 0
    assert ncp["high_quality_fraction"] > vae["high_quality_fraction"] + 0.05
    assert ncp["elbo_bpd"] < vae["elbo_bpd"] - 0.1
