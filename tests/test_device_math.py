"""The metric math on the run's device (issue 14, item 1): the torch routes of the Gaussian sums and
of KID equal the numpy routes on the CPU here; the GPU-marked tests (``pytest -m gpu``) compare a
CUDA run with a CPU run of the same inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.cli import main
from metrics.fid import GaussianStats, frechet_distance
from metrics.kid import kernel_inception_distance
from metrics.prdc import compute_prdc_multi_k


def _features(n: int = 600, d: int = 24, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 50.0 + shift).astype(np.float32)


def _stats(x: np.ndarray, device: str | None, batch: int = 128) -> GaussianStats:
    stats = GaussianStats(device=device)
    for lo in range(0, len(x), batch):
        stats.update(torch.from_numpy(x[lo : lo + batch]) if device else x[lo : lo + batch])
    return stats


def test_gaussian_sums_on_a_torch_device_equal_the_numpy_route():
    x = _features()
    host, dev = _stats(x, None), _stats(x, "cpu")
    assert dev.n == host.n == len(x)
    np.testing.assert_allclose(dev.mean, host.mean, rtol=1e-13)
    np.testing.assert_allclose(dev.cov, host.cov, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dev.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)
    merged = dev.merge(_stats(_features(seed=1), "cpu"))  # merging reads the pending device sums
    both = _stats(np.concatenate([x, _features(seed=1)]), None)
    np.testing.assert_allclose(merged.cov, both.cov, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="NaN or Inf"):
        GaussianStats(device="cpu").update(torch.tensor([[0.0, float("nan")]]))


def test_kid_kernels_in_torch_equal_the_numpy_route():
    fake, real = _features(400, 16, 2), _features(500, 16, 3, shift=0.1)
    ours = kernel_inception_distance(fake, real, num_subsets=7, subset_size=100, seed=5)
    torch_route = kernel_inception_distance(fake, real, num_subsets=7, subset_size=100, seed=5, device="cpu")
    assert torch_route == pytest.approx(ours, rel=1e-11)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pytest -m gpu on a GPU machine)")


@pytest.mark.gpu
@cuda
def test_gpu_sample_math_equals_the_cpu_within_1e6():
    x, y = _features(3000, 64, 4), _features(2500, 64, 5, shift=0.05)
    cpu, gpu = _stats(x, None), _stats(x, "cuda")
    np.testing.assert_allclose(gpu.cov, cpu.cov, rtol=1e-9, atol=1e-12)
    ref = _stats(y, None)
    fid_cpu = frechet_distance(cpu.mean, cpu.cov, ref.mean, ref.cov)
    assert frechet_distance(gpu.mean, gpu.cov, ref.mean, ref.cov) == pytest.approx(fid_cpu, rel=1e-6)
    kid_cpu = kernel_inception_distance(x, y, num_subsets=20, subset_size=1000)
    assert kernel_inception_distance(x, y, num_subsets=20, subset_size=1000, device="cuda") == pytest.approx(kid_cpu, rel=1e-6)
    prdc_cpu = compute_prdc_multi_k(y, x, pr_k=3, dc_k=5)
    assert compute_prdc_multi_k(y, x, pr_k=3, dc_k=5, device="cuda") == prdc_cpu  # exact distances: identical


@pytest.mark.gpu
@cuda
def test_eval_samples_on_cuda_gives_the_cpu_record_within_1e6(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).normal(size=(800, 2)).astype(np.float32))
    args = ["eval-samples", "--samples", str(tmp_path / "s.npz"), "--reference", "moons-test", "--num-samples", "800",
            "--feature-extractor", "identity", "--metrics", "fid,kid,prdc", "--quiet"]
    assert main([*args, "--device", "cpu", "--json", str(tmp_path / "cpu.json")]) == 0
    assert main([*args, "--json", str(tmp_path / "auto.json")]) == 0  # auto: the GPU
    cpu, gpu = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cpu", "auto"))
    assert gpu["run"]["device"].startswith("cuda")
    for key, entry in cpu["metrics"].items():
        assert gpu["metrics"][key]["value"] == pytest.approx(entry["value"], rel=1e-6, abs=1e-12), key


@pytest.mark.gpu
@cuda
def test_fid_from_gpu_inception_features_is_within_their_float32_noise(tmp_path):
    from inception_weights import make_random_inception_weights, smooth_blobs

    from metrics.features import get_feature_extractor

    weights = make_random_inception_weights(tmp_path / "w.pth")
    images_a, images_b = smooth_blobs(200, seed=1), smooth_blobs(200, seed=2)
    feats = {}
    for device in ("cpu", "cuda"):
        extractor = get_feature_extractor("inception-v3", device=device, weights_path=weights)
        with torch.inference_mode():
            feats[device] = [torch.cat([extractor(x[i : i + 50])["features"].float().cpu() for i in range(0, 200, 50)])
                             for x in (images_a, images_b)]
    noise = max(float((feats["cuda"][k] - feats["cpu"][k]).abs().max() / feats["cpu"][k].abs().max()) for k in (0, 1))
    fids = {}
    for device, (a, b) in feats.items():
        sa, sb = _stats(a.numpy(), None), _stats(b.numpy(), None)
        fids[device] = frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)
    # FID is quadratic in the features: a relative feature error e moves it by about 2e relative
    assert fids["cuda"] == pytest.approx(fids["cpu"], rel=max(10 * noise, 1e-6))
