"""Sample metrics do not change with the row order or the file format of identical inputs (issue 18.10).

Exact copies make ties: a sample that copies reference row m lies exactly on the k-NN radius of
every reference row whose k-th neighbour is m, and a set holding more than k copies of a row has
radius 0 there. Strict ``<`` then decides on bits, so the same pair must get the same distance
wherever it sits in the tiling, and identical rows must get exactly 0.

Invariance claimed and tested here:

* precision, recall, density, coverage: exactly invariant to any permutation of either set;
* FD: invariant up to float64 rounding of the streamed means/covariances (summed in another order);
* KID and IS draw subsets by row index, so a permutation changes the draws (by design, seeded);
  for identical inputs in the same order they, like every metric, are exactly independent of the
  file format (PNG folder or .npz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.eval_samples import SampleEvalConfig, evaluate_samples
from metrics.fid import fid_from_features
from metrics.prdc import compute_prdc_multi_k

KNN_KEYS = ("precision", "recall", "density", "coverage")


def _sets_with_copies(d: int, dtype: type[np.floating]) -> tuple[np.ndarray, np.ndarray]:
    """real [259, d] and fake [257, d]: groups of 7 identical rows in each set (more than k), single
    real copies of the fake groups, and 20 fake copies of real rows. With ``chunk_size=64`` the
    tiles have 52 rows and the last one is partial (259 = 4·52 + 51, 257 = 4·52 + 49)."""
    rng = np.random.default_rng(5)
    real = np.abs(rng.standard_normal((259, d)) * 0.5 + 0.3).astype(dtype)
    fake = np.abs(rng.standard_normal((257, d)) * 0.5 + 0.3).astype(dtype)
    for g in range(16):
        real[100 + 6 * g : 106 + 6 * g] = real[g]
        fake[100 + 6 * g : 106 + 6 * g] = fake[g]
    real[:16] = fake[:16]
    fake[230:250] = real[230:250]
    return real, fake


def _permutations(n: int) -> list[np.ndarray]:
    """Reversal, rotations (first rows, the copies, into the partial last tile) and seeded shuffles of range(n)."""
    rng = np.random.default_rng(n)
    return [np.arange(n)[::-1], *(np.roll(np.arange(n), -s) for s in (1, 3, 16)), *(rng.permutation(n) for _ in range(3))]


def _prdc_brute_force(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> dict[str, float]:
    """Naeem et al. 2020 definitions on float64 distances sqrt(Σ(x − y)²), row by row: identical
    rows give exactly 0 and a pair's distance does not depend on where it is computed."""
    r, f = real.astype(np.float64), fake.astype(np.float64)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.stack([np.sqrt(((b - row) ** 2).sum(1)) for row in a])

    d_rr, d_ff, d_rf = np.sort(dist(r, r), 1), np.sort(dist(f, f), 1), dist(r, f)
    r_pr, r_dc, f_pr = d_rr[:, pr_k], d_rr[:, dc_k], d_ff[:, pr_k]
    return {"precision": float((d_rf < r_pr[:, None]).any(0).mean()),
            "recall": float((d_rf < f_pr[None, :]).any(1).mean()),
            "density": float((d_rf < r_dc[:, None]).sum(0).mean()) / dc_k,
            "coverage": float((d_rf.min(1) < r_dc).mean())}


@pytest.mark.parametrize("d, dtype", [(2048, np.float32), (64, np.float64)])
def test_knn_metrics_do_not_depend_on_row_order(d: int, dtype: type[np.floating]) -> None:
    real, fake = _sets_with_copies(d, dtype)
    base = compute_prdc_multi_k(real, fake, pr_k=3, dc_k=3, chunk_size=64)
    # the ties are resolved as exact arithmetic resolves them
    assert base == pytest.approx(_prdc_brute_force(real, fake, 3, 3), abs=1e-12)
    for p_real, p_fake in zip(_permutations(len(real)), _permutations(len(fake))):
        for r, f in ((real[p_real], fake), (real, fake[p_fake]), (real[p_real], fake[p_fake])):
            assert compute_prdc_multi_k(r, f, pr_k=3, dc_k=3, chunk_size=64) == base


def test_knn_metrics_do_not_depend_on_chunk_size_with_copies() -> None:
    real, fake = _sets_with_copies(256, np.float32)
    base = compute_prdc_multi_k(real, fake, pr_k=3, dc_k=5)
    for chunk_size in (37, 64, 100, 258):
        assert compute_prdc_multi_k(real, fake, pr_k=3, dc_k=5, chunk_size=chunk_size) == base


def test_fd_does_not_depend_on_row_order() -> None:
    real, fake = _sets_with_copies(64, np.float32)
    base = fid_from_features(fake, real)
    for p_real, p_fake in zip(_permutations(len(real)), _permutations(len(fake))):
        # float64 sums of the same rows in another order: rounding only
        assert fid_from_features(fake[p_fake], real[p_real]) == pytest.approx(base, rel=1e-10)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_png_folder_and_npz_of_the_same_images_score_the_same(tmp_path: Path) -> None:
    """Grayscale digits, 58 of the 300 samples exact copies of reference images; the reference and
    one sample file are NHWC .npz (ADM layout), the other sample set a PNG folder, a third the
    .npz rows shuffled."""
    reference = load_dataset("mnist5k-train").x[::10][:400]
    samples = load_dataset("mnist5k-test").x[::3][:300].copy()
    rng = np.random.default_rng(0)
    samples[:58] = reference[rng.choice(len(reference), 58, replace=False)]
    samples[58:61] = samples[100]
    nhwc = lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # noqa: E731
    np.savez(tmp_path / "reference.npz", arr_0=nhwc(reference))
    np.savez(tmp_path / "samples.npz", arr_0=nhwc(samples))
    np.savez(tmp_path / "shuffled.npz", arr_0=nhwc(samples[rng.permutation(len(samples))]))
    for i, image in enumerate(samples):
        _write_png(tmp_path / "pngs" / f"{i:04d}.png", image[0])

    def run(spec: str) -> dict:
        cfg = SampleEvalConfig(samples=str(tmp_path / spec), reference=str(tmp_path / "reference.npz"),
                               feature_extractor="mnist-cnn", use_cache=False, replicates=0)
        return evaluate_samples(cfg, progress=False)

    npz, pngs, shuffled = run("samples.npz"), run("pngs"), run("shuffled.npz")
    assert npz["data"]["samples"]["content_hash"] == pngs["data"]["samples"]["content_hash"]
    values = {name: {k: v["value"] for k, v in rec["metrics"].items()} for name, rec in
              (("npz", npz), ("pngs", pngs), ("shuffled", shuffled))}
    assert set(KNN_KEYS) | {"fid", "kid_mean", "is_mean"} <= set(values["npz"])
    assert values["pngs"] == values["npz"]  # every metric, exactly
    for key in KNN_KEYS:
        assert values["shuffled"][key] == values["npz"][key], key
    assert values["shuffled"]["fid"] == pytest.approx(values["npz"]["fid"], rel=1e-10)


def test_grayscale_npz_rows_have_the_layout_of_png_rows(tmp_path: Path) -> None:
    """[N, H, W, 1] transposed to [N, 1, H, W] has strides (HW, 1, W, 1), which numpy calls
    C-contiguous; torch convolutions treat it as channels-last and round differently."""
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", arr_0=images)
    for i, image in enumerate(images):
        _write_png(tmp_path / "pngs" / f"{i}.png", image[..., 0])
    from_npz, from_pngs = load_dataset(str(tmp_path / "gray.npz")).x, load_dataset(str(tmp_path / "pngs")).x
    assert np.array_equal(from_npz, from_pngs)
    assert from_npz.strides == from_pngs.strides == (784, 784, 28, 1)
