"""Likelihood metrics against closed-form models: exact bpd, ELBO/IWAE ordering, chunking, offsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import Tensor, nn

from baselines.analytic import AffineFlow, LinearGaussianVAE, UniformCategorical
from baselines.vae import vae, vae_2d
from harness.core.nfe import counting
from harness.core.protocols import DataSpec
from harness.core.rng import BatchRNG, example_seed
from metrics.likelihood import (
    batches_of,
    bound_bpd,
    chunk_sizes,
    combine_iwae_chunks,
    exact_bpd,
    model_inputs,
    takes_rng,
)


class UniformBox(nn.Module):
    """The uniform density on [lo, hi]^D: log p = −D log(hi − lo) inside."""

    def __init__(self, shape: tuple[int, ...], value_range: tuple[float, float]) -> None:
        super().__init__()
        self.spec = DataSpec(shape, "continuous", value_range=value_range)

    def log_prob(self, x: Tensor) -> Tensor:
        lo, hi = self.spec.value_range
        inside = ((x >= lo) & (x <= hi)).flatten(1).all(-1)
        value = torch.full((x.shape[0],), -self.spec.num_dims * math.log(hi - lo), dtype=torch.float64)
        return value.masked_fill(~inside, -math.inf)


def _images(n: int, shape: tuple[int, ...] = (1, 4, 4), seed: int = 0) -> Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _weight_variance(vae: LinearGaussianVAE, x: Tensor) -> Tensor:
    """v = Var_q(w / p(x)) = ∫ p(z|x)² / q(z|x) dz − 1 per example [B], in closed form.

    With posterior N(m, P⁻¹) and q = N(μ, Q⁻¹), Q diagonal, and M = 2P − Q ≻ 0 (else v = ∞):
    ∫ p²/q = det(Q)^{-1/2} det(P) det(M)^{-1/2} exp(−½[2mᵀPm − μᵀQμ − bᵀM⁻¹b]), b = 2Pm − Qμ.
    """
    with torch.no_grad():
        w, var = vae.net.weight, vae.noise_std**2
        precision = torch.eye(w.shape[1], dtype=w.dtype) + w.T @ w / var
        m = torch.linalg.solve(precision, w.T @ (x - vae.net.bias).T / var).T
        mu, logvar = vae.encode(x)
        q_precision = torch.diag(torch.exp(-logvar[0]))
        joint = 2 * precision - q_precision
        assert torch.linalg.eigvalsh(joint).min() > 0, "q too narrow: the weights have infinite variance"
        b = 2 * m @ precision - mu @ q_precision
        quad = (2 * (m @ precision * m).sum(-1) - (mu @ q_precision * mu).sum(-1)
                - (b * torch.linalg.solve(joint, b.T).T).sum(-1))
        log_det = 0.5 * logvar[0].sum() + torch.logdet(precision) - 0.5 * torch.logdet(joint)
        return torch.exp(log_det - 0.5 * quad) - 1


@pytest.fixture(scope="module")
def vae_and_data() -> tuple[LinearGaussianVAE, Tensor, Tensor, float]:
    """A 6-D, 3-latent linear-Gaussian VAE with an encoder near, not at, the posterior; 200 samples,
    their exact log p, and the mean importance-weight variance v̄ (7.6 here)."""
    vae = LinearGaussianVAE(6, 3, seed=1)
    vae.use_posterior_encoder()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        vae.encoder.weight.add_(0.02 * torch.randn(vae.encoder.weight.shape, generator=g, dtype=torch.float64))
        vae.enc_logvar.add_(0.7)  # over-dispersed q: finite weight variance
    x = vae.sample(200, BatchRNG(0, range(200)))
    return vae, x, vae.log_prob(x).detach(), float(_weight_variance(vae, x).mean())


def _iwae_tolerance(v: float, k: int, n: int) -> float:
    """|mean_n(L_k) − mean_n(log p)| bound: 3 × the bias v/(2k) + 5 std of a mean of n, sqrt(v/(k n)).

    Delta method (e.g. Nowozin 2018, "Debiasing evidence approximations", sec. 3):
    E[L_k] = log p − v/(2k) + O(k⁻²) and Var(L_k) ≈ v/k, with v = Var_q(w/p) per example.
    """
    return 3 * v / (2 * k) + 5 * math.sqrt(v / (k * n))


def test_affine_flow_log_prob_matches_scipy() -> None:
    flow = AffineFlow(5, seed=3)
    x = flow.sample(64, BatchRNG(1, range(64)))
    scale, shift = torch.exp(flow.log_scale).detach().numpy(), flow.shift.detach().numpy()
    expected = multivariate_normal(mean=shift, cov=np.diag(scale**2)).logpdf(x.numpy())
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_exact_bpd_equals_analytic_and_ignores_batching() -> None:
    flow = AffineFlow(5, seed=3)
    x = flow.sample(100, BatchRNG(2, range(100))).float()
    spec = flow.data_spec
    logpdf = multivariate_normal(mean=flow.shift.detach().numpy(),
                                 cov=np.diag(torch.exp(2 * flow.log_scale).detach().numpy())).logpdf(x.double().numpy())
    bpd = -logpdf / (5 * math.log(2))
    result = exact_bpd(flow, batches_of(x, 32), spec, seed=0)
    assert result["estimator"] == "exact" and result["n"] == 100 and result["offset_bits"] == 0.0
    assert result["value"] == pytest.approx(bpd.mean(), abs=1e-9)
    assert result["stderr"] == pytest.approx(bpd.std(ddof=1) / 10, rel=1e-6)
    assert exact_bpd(flow, batches_of(x, 7), spec, seed=0)["value"] == pytest.approx(result["value"], abs=1e-12)


def test_uniform_categorical_is_8_bits_and_binarized_is_1_bit() -> None:
    x = _images(20)
    result = exact_bpd(UniformCategorical((1, 4, 4)), batches_of(x, 8), DataSpec((1, 4, 4), "discrete", num_categories=256), seed=0)
    assert result["value"] == pytest.approx(8.0, abs=1e-12) and result["stderr"] == 0.0 and result["offset_bits"] == 0.0
    binary_spec = DataSpec((1, 4, 4), "discrete", num_categories=2)
    inputs, _, fields = model_inputs(x, binary_spec, BatchRNG(0, range(20)))
    assert torch.equal(inputs, (x >= 128).long()) and "binarized at 128" in fields["dequantization"]
    assert exact_bpd(UniformCategorical((1, 4, 4), 2), [x], binary_spec, seed=0)["value"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_dequantization_offset_makes_uniform_density_8_bits(value_range: tuple[float, float]) -> None:
    model = UniformBox((3, 2, 2), value_range)
    x = torch.cat([_images(30, (3, 2, 2)), torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)])
    inputs, offset, _ = model_inputs(x, model.spec, BatchRNG(0, range(len(x))))
    assert inputs.min() >= value_range[0] and inputs.max() < value_range[1]
    assert offset == pytest.approx(math.log2(256 / (value_range[1] - value_range[0])))
    result = exact_bpd(model, batches_of(x, 9), model.spec, seed=0)
    assert result["value"] == pytest.approx(8.0, abs=1e-12) and result["value_range"] == list(value_range)


def test_dequantization_noise_is_per_example() -> None:
    spec = DataSpec((1, 4, 4))
    x = _images(6)
    full, _, _ = model_inputs(x, spec, BatchRNG(4, range(6)))
    part, _, _ = model_inputs(x[3:5], spec, BatchRNG(4, [3, 4]))
    assert torch.equal(full[3:5], part)
    flow, images = AffineFlow(16, seed=0), _images(20, (16,))  # a density on dequantized 16-pixel images
    by_range = exact_bpd(flow, batches_of(images, 6), flow.data_spec, seed=4)
    by_start = exact_bpd(flow, [(0, images[:9]), (9, images[9:])], flow.data_spec, seed=4)
    assert by_range == by_start and by_range["offset_bits"] == 7.0


def test_nonfinite_output_and_bad_inputs_raise() -> None:
    class HalfNaN(nn.Module):
        def log_prob(self, x: Tensor) -> Tensor:
            out = torch.zeros(x.shape[0])
            out[::2] = math.nan
            return out

    spec = DataSpec((2,))
    with pytest.raises(ValueError, match="NaN or Inf for 3 of 5 examples"):
        exact_bpd(HalfNaN(), [torch.zeros(5, 2)], spec, seed=0)
    with pytest.raises(ValueError, match=r"per-example shape \(1, 5, 5\).*expects \(1, 4, 4\)"):
        exact_bpd(UniformCategorical((1, 4, 4)), [_images(2, (1, 5, 5))], DataSpec((1, 4, 4), "discrete", num_categories=256), seed=0)
    with pytest.raises(ValueError, match="float data with a discrete model"):
        model_inputs(torch.zeros(2, 2), DataSpec((2,), "discrete", num_categories=256), BatchRNG(0, range(2)))
    # K levels other than 2 and 256: level = round(pixel (K − 1) / 255), said in the record's field
    images = _images(2)
    levels, offset, fields = model_inputs(images, DataSpec((1, 4, 4), "discrete", num_categories=16), BatchRNG(0, range(2)))
    assert torch.equal(levels, (images.long() * 30 + 255) // 510) and offset == 0.0
    assert fields["dequantization"] == "none: 16 grey levels, level = round(pixel * 15 / 255)"


def test_bounds_are_ordered_and_converge(vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float]) -> None:
    vae, x, log_p, v = vae_and_data
    reps = 20  # draws per example for k <= 50: measured std of gaps[50] ≈ 0.003 nats against a 0.04 margin
    with torch.no_grad():
        gaps = {k: float((vae.elbo(x.repeat(reps, 1), num_importance=k, generator=torch.Generator().manual_seed(k))
                          - log_p.repeat(reps)).mean()) for k in (1, 5, 50)}
        gaps[5000] = float((vae.elbo(x, num_importance=5000, generator=torch.Generator().manual_seed(0)) - log_p).mean())
    assert gaps[1] < gaps[5] < gaps[50] < 0.0
    tolerance = _iwae_tolerance(v, 5000, 200)
    assert tolerance < 0.02 and abs(gaps[5000]) < tolerance


def test_combine_iwae_chunks_is_exact_on_fixed_log_weights() -> None:
    log_w = torch.tensor([[-1.0, 2.0, 0.5], [0.3, -4.0, 1.0], [2.5, 0.0, -0.2], [-3.0, 1.5, 0.7], [0.1, 0.2, 0.3]],
                         dtype=torch.float64)  # [k=5, B=3]
    direct = torch.logsumexp(log_w, 0) - math.log(5)
    chunks = [log_w[:2], log_w[2:4], log_w[4:]]
    bounds = torch.stack([torch.logsumexp(c, 0) - math.log(len(c)) for c in chunks])
    torch.testing.assert_close(combine_iwae_chunks(bounds, [2, 2, 1]), direct, rtol=0, atol=1e-14)
    equal = torch.stack([torch.logsumexp(log_w[i:i + 1], 0) for i in range(5)])  # c = 1, m = 5
    torch.testing.assert_close(torch.logsumexp(equal, 0) - math.log(5 / 1), direct, rtol=0, atol=1e-14)
    assert chunk_sizes(1000, 100) == [100] * 10 and chunk_sizes(201, 100) == [100, 101] and chunk_sizes(250, 100) == [100, 100, 50]
    assert chunk_sizes(1, 100) == [1] and chunk_sizes(7, 100) == [7]


def test_chunked_iwae_matches_unchunked(vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float]) -> None:
    vae, x, log_p, v = vae_and_data
    nats_per_bpd = 6 * math.log(2)
    chunked = bound_bpd(vae, batches_of(x, 100), vae.data_spec, num_importance=1000, chunk=100, seed=3)
    whole = bound_bpd(vae, batches_of(x, 100), vae.data_spec, num_importance=1000, chunk=1000, seed=4)
    assert chunked["metric"] == "iwae_bpd" and chunked["num_importance"] == 1000 and chunked["n"] == 200
    # Independent estimates of E[L_1000]: their difference has std sqrt(2 v / (k n)).
    assert abs(chunked["value"] - whole["value"]) * nats_per_bpd < 5 * math.sqrt(2 * v / (1000 * 200))
    exact_bpd_value = float(-log_p.mean()) / nats_per_bpd
    assert abs(chunked["value"] - exact_bpd_value) * nats_per_bpd < _iwae_tolerance(v, 1000, 200)


def test_bound_bpd_is_deterministic_and_restores_rng(vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float]) -> None:
    vae, x, _, _ = vae_and_data
    state = torch.get_rng_state()
    a = bound_bpd(vae, batches_of(x, 50), vae.data_spec, num_importance=20, chunk=8, seed=1)
    b = bound_bpd(vae, batches_of(x, 50), vae.data_spec, num_importance=20, chunk=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == b and a["value"] != bound_bpd(vae, batches_of(x, 50), vae.data_spec, num_importance=20, chunk=8, seed=2)["value"]
    elbo = bound_bpd(vae, batches_of(x, 50), vae.data_spec, num_importance=1, seed=1)
    assert elbo["metric"] == "elbo_bpd" and elbo["value"] > a["value"]


def test_bound_bpd_calls_the_network_once_per_chunk(vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float]) -> None:
    vae, x, _, _ = vae_and_data
    with counting(vae) as count:
        bound_bpd(vae, batches_of(x, 100), vae.data_spec, num_importance=250, chunk=100, seed=0)
    assert count.forward_calls == 2 * 3  # 2 batches × chunks [100, 100, 50]


def test_baselines_are_seeded_and_leave_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = LinearGaussianVAE(5, 3, seed=2), LinearGaussianVAE(5, 3, seed=2)
    AffineFlow(4, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class PerExampleBound(nn.Module):
    """A user model with the ``rng`` signature: L_k = log mean_i exp(−½‖x − ε_i‖²), ε_i ~ N(0, I) from ``rng``,
    computed example by example so its arithmetic does not depend on the batch either."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.data_spec = DataSpec((dim,))

    def elbo(self, x: Tensor, *, num_importance: int = 1, rng: BatchRNG) -> Tensor:
        eps = rng.normal((num_importance, x.shape[-1]), dtype=torch.float64)  # [B, k, D]
        return torch.stack([torch.logsumexp(-0.5 * (x[i].double() - eps[i]).pow(2).sum(-1), 0) - math.log(num_importance)
                            for i in range(x.shape[0])])


class OldSignature:
    """A user model with the older ``elbo(x, *, num_importance=1)``: its noise is the global torch RNG's."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.data_spec = model, model.data_spec

    def elbo(self, x: Tensor, *, num_importance: int = 1) -> Tensor:
        return self.model.elbo(x, num_importance=num_importance)


BATCH_SIZES = (1, 7, 100)


def test_takes_rng_reads_the_signature() -> None:
    class KwargsOnly:
        def elbo(self, x: Tensor, **kwargs: object) -> Tensor:
            return x.sum(-1)

    assert takes_rng(PerExampleBound(2)) and takes_rng(vae_2d(hidden=8, depth=1))
    assert takes_rng(LinearGaussianVAE(3, 2, seed=0))
    assert not takes_rng(OldSignature(LinearGaussianVAE(3, 2, seed=0))) and not takes_rng(KwargsOnly())


@pytest.mark.parametrize("num_importance, chunk", [(1, 100), (7, 3)])  # (7, 3): chunks [3, 4]
def test_user_bound_with_rng_is_identical_for_any_batch_size(num_importance: int, chunk: int) -> None:
    model = PerExampleBound(3)
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    results = [bound_bpd(model, batches_of(x, b), model.data_spec, num_importance=num_importance, chunk=chunk, seed=4)
               for b in BATCH_SIZES]
    assert results[0] == results[1] == results[2] and results[0]["bound_noise"].startswith("per example")
    shuffled = torch.randperm(100, generator=torch.Generator().manual_seed(1)).tolist()
    by_index = [bound_bpd(model, [([i], x[i:i + 1])], model.data_spec, num_importance=num_importance, chunk=chunk,
                          seed=4)["value"] for i in shuffled[:5]]
    in_batch = [bound_bpd(model, [(shuffled[:5], x[shuffled[:5]])], model.data_spec, num_importance=num_importance,
                          chunk=chunk, seed=4)["block_means"]]
    assert by_index == in_batch[0]  # one example per block: example i's bound is the same alone or in a batch


@pytest.mark.parametrize("num_importance, chunk", [(1, 100), (7, 3)])
def test_vae_baseline_bound_is_the_same_for_any_batch_size(num_importance: int, chunk: int) -> None:
    model = vae(data_shape=(1, 4, 4), latent_dim=3, hidden=16, depth=1)
    x = _images(100)
    new = [bound_bpd(model, batches_of(x, b), model.data_spec, num_importance=num_importance, chunk=chunk, seed=3)
           for b in BATCH_SIZES]
    old = [bound_bpd(OldSignature(model), batches_of(x, b), model.data_spec, num_importance=num_importance, chunk=chunk,
                     seed=3) for b in BATCH_SIZES]
    # Same noise per example; what remains is float32 rounding of the MLP at another batch size (measured <= 3.5e-8
    # bits/dim per block mean), against Monte-Carlo differences of 0.05 bits/dim when the noise depends on the batch.
    for result in new[:2]:
        assert result["value"] == pytest.approx(new[2]["value"], rel=0, abs=1e-6)
        np.testing.assert_allclose(result["block_means"], new[2]["block_means"], rtol=0, atol=1e-6)
    assert max(abs(a - b) for a, b in zip(old[0]["block_means"], old[2]["block_means"])) > 1e-3


@pytest.mark.parametrize("num_importance, chunk", [(1, 100), (7, 3)])
def test_linear_gaussian_vae_bound_is_identical_for_any_batch_size(
        vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float], num_importance: int, chunk: int) -> None:
    vae, x, _, _ = vae_and_data
    results = [bound_bpd(vae, batches_of(x[:100], b), vae.data_spec, num_importance=num_importance, chunk=chunk, seed=2)
               for b in BATCH_SIZES]
    for result in results[:2]:  # float64 throughout: equal to rounding of the last bit
        assert result["value"] == pytest.approx(results[2]["value"], rel=1e-13, abs=0)
        np.testing.assert_allclose(result["block_means"], results[2]["block_means"], rtol=1e-13, atol=0)


def test_old_signature_bound_still_works(vae_and_data: tuple[LinearGaussianVAE, Tensor, Tensor, float]) -> None:
    vae, x, _, _ = vae_and_data
    model = OldSignature(vae)
    state = torch.get_rng_state()
    result = bound_bpd(model, batches_of(x[:50], 50), vae.data_spec, num_importance=20, chunk=8, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert result["metric"] == "iwae_bpd" and result["n"] == 50 and "depends on batch composition" in result["bound_noise"]
    assert result == bound_bpd(model, batches_of(x[:50], 50), vae.data_spec, num_importance=20, chunk=8, seed=1)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the global RNG reseeded per batch, chunks [8, 12]
        torch.manual_seed(example_seed(1, 0, "bound"))
        bounds = torch.stack([vae.elbo(x[:50], num_importance=n).double() for n in (8, 12)])
    expected = float(-combine_iwae_chunks(bounds, [8, 12]).mean()) / (6 * math.log(2))  # D = 6, no offset
    assert result["value"] == pytest.approx(expected, rel=1e-14, abs=0)
    elbo = bound_bpd(model, batches_of(x[:50], 7), vae.data_spec, num_importance=1, seed=1)
    assert elbo["metric"] == "elbo_bpd" and math.isfinite(elbo["value"])

