"""D3PM (baselines/d3pm.py): transition matrices, the posterior, the bound's arithmetic against the
exact NLL of a known categorical with an oracle reverse model, the quantized data sets, and a seeded
run on the 8x8 digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.d3pm import D3PM, TRANSITIONS, betas, transition_matrices
from harness.core.levels import levels_to_pixels, pixels_to_levels
from harness.core.nfe import counting
from harness.core.rng import BatchRNG

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"shape": (1, 4, 4), "base": 8, "time_dim": 8}


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_transition_matrices_are_stochastic_and_reach_the_stationary_distribution(transition):
    model = D3PM(transition=transition, levels=5, num_timesteps=30, **SMALL)
    q, bar = model.q_onestep[1:], model.q_bar
    assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones_like(q.sum(-1)), atol=1e-12)
    assert torch.allclose(bar.sum(-1), torch.ones_like(bar.sum(-1)), atol=1e-12)
    prior = model.prior()
    # q(x_T | x_0) ≈ p(x_T) from every x_0 (the discretized Gaussian's linear schedule leaves 2e-3; the bound counts it)
    assert torch.allclose(bar[-1], prior.expand_as(bar[-1]), atol=3e-3), bar[-1]
    if transition == "gaussian":
        assert torch.allclose(q, q.transpose(1, 2))  # symmetric, so doubly stochastic: uniform is stationary
        # mass moves to nearby levels first: from level 0, one early step reaches level 1 more often than level 4
        assert q[0, 0, 1] > 100 * q[0, 0, 4]
    if transition == "absorbing":
        assert torch.allclose(bar[-1][:, -1], torch.ones(6, dtype=torch.float64), atol=1e-12)  # jsd schedule: β_T = 1 masks all


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_forward_marginals_are_the_closed_forms_and_what_the_chain_reaches(transition):
    """q(x_t | x_0) = row x_0 of Q̄_t = Q_1 ⋯ Q_t, checked three ways that do not use the model's product:
    the closed forms of Austin et al. 2021, App. A.2.1 (uniform: ᾱ_t I + (1 − ᾱ_t) 11ᵀ/K) and A.2.2
    (absorbing: ᾱ_t I + (1 − ᾱ_t) 1 e_mᵀ), with ᾱ_t = Π_s (1 − β_s); the matrix power Q^t of a constant-β
    chain (every kind); and 40,000 simulated chains from each x_0 (within 4 sigma of a binomial frequency)."""
    model = D3PM(transition=transition, levels=3, num_timesteps=8, **SMALL)
    K, S = 3, model.S
    beta = betas({"uniform": "cosine", "absorbing": "jsd", "gaussian": "linear"}[transition], 8)
    abar = torch.cumprod(1 - beta, 0)
    for t in range(1, 9):
        x0 = torch.arange(K)
        got = model.q_probs(x0, torch.full((K,), t))
        if transition == "uniform":
            assert torch.allclose(got, abar[t - 1] * torch.eye(K, dtype=torch.float64) + (1 - abar[t - 1]) / K, atol=1e-12)
        if transition == "absorbing":
            want = torch.zeros(K, S, dtype=torch.float64)
            want[:, :K] = abar[t - 1] * torch.eye(K, dtype=torch.float64)
            want[:, K] = 1 - abar[t - 1]
            assert torch.allclose(got, want, atol=1e-12)
    constant = D3PM(transition=transition, levels=K, num_timesteps=5, schedule="linear", beta_start=0.3, beta_end=0.3, **SMALL)
    q = transition_matrices(transition, K, torch.full((1,), 0.3, dtype=torch.float64))[0]
    for t in range(1, 6):
        assert torch.allclose(constant.q_bar[t], torch.linalg.matrix_power(q, t), atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    n, t = 40_000, 5
    for start in range(K):
        x = torch.full((n,), start)
        for step in range(1, t + 1):
            x = torch.multinomial(model.q_onestep[step][x].float(), 1, generator=gen).squeeze(1)
        freq = torch.bincount(x, minlength=S).double() / n
        p = model.q_probs(torch.tensor([start]), torch.tensor([t]))[0]
        assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-9).all(), (transition, start, freq, p)


def test_schedules():
    cos = betas("cosine", 10)
    abar = torch.cumprod(1 - cos, 0)
    grid = torch.cos((torch.arange(11, dtype=torch.float64) / 10 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert torch.allclose(abar, grid[1:] / grid[0])
    assert torch.allclose(betas("jsd", 4), torch.tensor([1 / 4, 1 / 3, 1 / 2, 1.0], dtype=torch.float64))
    keep = torch.cumprod(1 - betas("jsd", 8), 0)  # the absorbing probability after t steps is t/T
    assert torch.allclose(1 - keep, torch.arange(1, 9, dtype=torch.float64) / 8)
    assert torch.allclose(betas("linear", 3, 0.1, 0.5), torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("levels", [3, 4])
@pytest.mark.parametrize("transition", TRANSITIONS)
def test_the_posterior_is_bayes_rule_on_the_matrices(transition, levels):
    """q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0), enumerated over every (x_0, x_t) pair."""
    model = D3PM(transition=transition, levels=levels, num_timesteps=6, **SMALL)
    S = model.S
    x0 = torch.arange(levels).repeat_interleave(S)
    xt = torch.arange(S).repeat(levels)
    for step in (2, 4, 6):
        t = torch.full((len(x0),), step)
        got = model.true_posterior(x0, xt, t)
        q_t, bar_prev, bar_t = model.q_onestep[step], model.q_bar[step - 1], model.q_bar[step]
        for i in range(len(x0)):
            if bar_t[x0[i], xt[i]] == 0:
                continue  # x_t impossible from x_0
            bayes = q_t[:, xt[i]] * bar_prev[x0[i]] / bar_t[x0[i], xt[i]]
            assert torch.allclose(got[i], bayes, atol=1e-12)
            assert abs(float(got[i].sum()) - 1.0) < 1e-12


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_the_bound_of_an_oracle_reverse_model_is_the_exact_nll_plus_the_prior_mismatch(transition):
    """For one pixel with law π, the reverse model of eq. 4 equals the true reverse q(x_{t−1} | x_t)
    when p̃ = π (t ≥ 2) and p̃ = q(x_0 | x_1) at t = 1. Its bound, with every expectation over x_t
    enumerated, is then exactly −log π(x_0) + Σ_{x_T} q(x_T | x_0) log(q(x_T) / p(x_T))."""
    model = D3PM(transition=transition, levels=4, num_timesteps=5, **SMALL)
    S, K, T = model.S, model.K, model.T
    pi = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q_xT = pi @ model.q_bar[T][:K]
    prior = model.prior()
    for a in range(K):
        total = float(model.prior_kl(torch.tensor([a])))
        for step in range(1, T + 1):
            xt = torch.arange(S)
            x0 = torch.full((S,), a)
            t = torch.full((S,), step)
            if step == 1:
                post = pi[:, None] * model.q_bar[1][:K]  # [K, S]: π(x0) q(x_1 | x0)
                p_tilde = (post / post.sum(0, keepdim=True).clamp_min(1e-300)).T  # [S, K] = q(x0 | x_1)
            else:
                p_tilde = pi.expand(S, K)
            terms = model.vlb_term(x0, xt, t, torch.log(p_tilde.clamp_min(1e-300)))
            weights = model.q_bar[step][a]  # q(x_t | x_0 = a)
            total += float((weights * torch.where(weights > 0, terms, torch.zeros_like(terms))).sum())
        mismatch = float((model.q_bar[T][a] * torch.log(q_xT.clamp_min(1e-300) / prior.clamp_min(1e-300))
                          ).where(model.q_bar[T][a] > 0, torch.zeros(())).sum())
        assert total == pytest.approx(-math.log(pi[a]) + mismatch, abs=1e-9), (a, total)


def test_hybrid_loss_adds_lambda_times_the_cross_entropy_and_sampling_costs_T_calls():
    model = D3PM(transition="absorbing", levels=4, num_timesteps=3, hybrid_lambda=0.001, **SMALL)
    x0 = torch.randint(0, 4, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    t = torch.randint(1, 4, (5,), generator=g)
    u = torch.rand(x0.shape, generator=g)
    with torch.no_grad():
        vlb, ce = model.losses(x0, t, u)
    opt = model.configure_optimizers()
    out = model.training_step(x0, step=0, optimizers=opt, generator=torch.Generator().manual_seed(1))
    assert out["loss"] == pytest.approx(float(vlb.mean() + 0.001 * ce.mean()), rel=1e-6)
    with counting(model) as count:
        x = model.sample(6, BatchRNG(2, range(6)))
    assert count.forward_calls == 3 and x.dtype == torch.int64 and int(x.max()) < 4  # no [MASK] left
    assert torch.equal(x, model.sample(6, BatchRNG(2, range(6))))
    with pytest.raises(NotImplementedError, match="num_importance=1 only"):
        model.elbo(x0, num_importance=2)


def test_categorical_draws_never_land_on_a_state_of_probability_zero():
    """u = 0 (once in 2^24 torch.rand draws) once picked state 0 whatever its probability; in the
    absorbing chain that made x_t impossible given x_0, the posterior 0/0 and training NaN."""
    model = D3PM(transition="absorbing", levels=4, num_timesteps=3, **SMALL)
    probs = torch.tensor([[0.0, 0.0, 0.25, 0.75, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    for u, want in ((0.0, [2, 1]), (0.2499, [2, 1]), (0.25, [3, 1]), (1.0 - 2.0**-24, [3, 1])):
        draw = model.sample_categorical(probs, torch.full((2,), u))
        assert draw.tolist() == want, (u, draw)
    x0 = torch.full((1, 1, 4, 4), 2)
    for t in (1, 2, 3):
        vlb, ce = model.losses(x0, torch.tensor([t]), torch.zeros(x0.shape))
        assert torch.isfinite(vlb).all() and torch.isfinite(ce).all(), t


def test_levels_and_quantized_data_sets():
    v = torch.arange(256)
    assert torch.equal(pixels_to_levels(v, 2), (v >= 128).long()) and torch.equal(pixels_to_levels(v, 256), v)
    for k in (3, 4, 7, 16, 255):
        c = torch.arange(k)
        assert torch.equal(pixels_to_levels(levels_to_pixels(c, k), k), c)
    from harness.datasets import load_dataset

    q4 = load_dataset("digits-q4-train")
    assert q4.name == "digits-q4-train" and set(np.unique(q4.x)) <= {0, 85, 170, 255}
    raw = load_dataset("digits-train")
    assert np.array_equal(q4.x, levels_to_pixels(pixels_to_levels(torch.from_numpy(raw.x), 4), 4).numpy())
    with pytest.raises(ValueError, match="grey levels must be an int in 2..256"):
        pixels_to_levels(v, 1)


def test_a_seeded_run_on_quantized_digits_beats_the_uniform_bound(tmp_path):
    """d3pm-gaussian on digits-q4 (8x8, 4 levels), T = 10, seed 0. Measured bound on 100 test digits:
    3.57 bits/dim after 1 step, 0.97 after 400 (uniform levels: exactly 2). Thresholds: above 2 untrained,
    below 1.3 trained (a third of the way from uniform to the measured value's neighbourhood); the
    samples' histogram of levels is closer to the data's than the uniform histogram is (L1)."""
    from harness.datasets import load_dataset
    from harness.runner import ModelEvalConfig, evaluate_model, load_model
    from harness.train import TrainConfig, train

    config = {"levels": 4, "num_timesteps": 10, "shape": [1, 8, 8], "base": 16, "time_dim": 16, "lr": 2e-3,
              "batch_size": 64}
    bound = {}
    for steps in (1, 400):
        path = tmp_path / f"d{steps}.pt"
        train(TrainConfig(model="d3pm-gaussian", dataset="digits-q4-train", out=str(path), steps=steps, seed=0),
              model_config={**config, "steps": steps}, progress=False)
        record = evaluate_model(ModelEvalConfig.from_dict({"dataset": "digits-q4-test", "checkpoint": str(path),
                                                           "num_samples": 100, "metrics": ["elbo_bpd"]}), progress=False)
        bound[steps] = record["metrics"]["elbo_bpd"]["value"]
    assert bound[1] > 2.0 and bound[400] < 1.3, bound
    model = load_model(ModelEvalConfig(dataset="digits-q4-test", checkpoint=str(tmp_path / "d400.pt"))).model
    samples = model.sample(200, BatchRNG(0, range(200)))
    data = pixels_to_levels(torch.from_numpy(load_dataset("digits-q4-test").x), 4)
    hist = [torch.bincount(x.flatten(), minlength=4).double() / x.numel() for x in (samples, data)]
    assert (hist[0] - hist[1]).abs().sum() < (0.25 - hist[1]).abs().sum() / 3, hist
