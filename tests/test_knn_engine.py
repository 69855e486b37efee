"""The k-NN engine of precision/recall/density/coverage (metrics.knn): screened float32 tiles with
rigorous bounds, reference distances only where a test is within rounding, and half-samples that
share the run's passes. Every value is compared with a brute-force float64 evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metrics.knn as knn
from harness.core.stats import half_sample_rows
from metrics.prdc import compute_prdc_multi_k, prdc_subsets


def _brute(real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> dict[str, float]:
    """prdc's definitions on scikit-learn-style distances (float64 expansion rounded to the input dtype)."""
    def dist(a, b):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        sq = ((a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :]) - 2.0 * a64 @ b64.T
        same = (a[:, None, :] == b[None, :, :]).all(-1)
        return np.where(same, 0.0, np.sqrt(np.maximum(sq.astype(a.dtype), 0)))
    dr, df, drf = dist(real, real), dist(fake, fake), dist(real, fake)
    r_pr, r_dc, f_pr = np.sort(dr, 1)[:, pr_k], np.sort(dr, 1)[:, dc_k], np.sort(df, 1)[:, pr_k]
    return {"precision": float((drf < r_pr[:, None]).any(0).mean()), "recall": float((drf < f_pr[None, :]).any(1).mean()),
            "density": float((drf < r_dc[:, None]).sum(0).mean() / dc_k), "coverage": float((drf.min(1) < r_dc).mean())}


def _sets(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "gauss32":
        real = rng.normal(size=(260, 48)).astype(np.float32)
        fake = (rng.normal(size=(231, 48)) * 1.1 + 0.2).astype(np.float32)
    elif kind == "binary":  # integer distances: ties at every radius
        real = (rng.random((240, 64)) < 0.5).astype(np.float32)
        fake = (rng.random((250, 64)) < 0.4).astype(np.float32)
    elif kind == "offset":  # far from the origin and from each other: screening centres each pass
        real = (rng.normal(size=(200, 32)) + 1e3).astype(np.float32)
        fake = (rng.normal(size=(210, 32)) * 0.9 + 1e3 + 0.5).astype(np.float32)
    else:
        real, fake = rng.normal(size=(200, 16)), rng.normal(size=(190, 16)) * 1.2
    fake[:15] = real[:15]  # exact copies tie with radii
    real[40:50] = real[30:40]
    return real, fake


@pytest.mark.parametrize("kind", ["gauss32", "binary", "offset", "float64"])
def test_prdc_equals_brute_force_and_subsets_equal_separate_runs(kind: str) -> None:
    rng = np.random.default_rng(3)
    real, fake = _sets(kind, rng)
    assert compute_prdc_multi_k(real, fake, pr_k=3, dc_k=5, chunk_size=64) == pytest.approx(_brute(real, fake, 3, 5), abs=1e-12)
    halves = [(rows, ref_rows) for rows, ref_rows, _ in half_sample_rows(len(fake), len(real), 4, seed=1)]
    together = prdc_subsets(real, fake, [(None, None), *halves], pr_k=3, dc_k=5, chunk_size=64)
    for (rows, ref_rows), value in zip([(None, None), *halves], together):
        sub_real = real if ref_rows is None else real[ref_rows]
        sub_fake = fake if rows is None else fake[rows]
        assert value == compute_prdc_multi_k(sub_real, sub_fake, pr_k=3, dc_k=5, chunk_size=64)
        assert value == pytest.approx(_brute(sub_real, sub_fake, 3, 5), abs=1e-12)


def test_radii_beyond_a_short_list_come_from_the_exact_fallback() -> None:
    """A list of 4 neighbours cannot give half-sample radii at k = 3 for most rows: exact_kth does."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(150, 8)).astype(np.float32))
    lists = knn.neighbour_lists(x, 4, chunk_size=32)
    members = torch.zeros(150, dtype=torch.bool)
    members[torch.as_tensor(rng.choice(150, 75, replace=False))] = True
    _, certain = knn.subset_radii(lists, 3, members)
    assert int((members & ~certain).sum()) > 10
    got = knn.radii_with_fallback(x, lists, 3, members, knn.squared_norms(x))
    sub = x[members].numpy().astype(np.float64)
    sq = ((sub * sub).sum(1)[:, None] + (sub * sub).sum(1)[None, :]) - 2.0 * sub @ sub.T
    expected = np.sort(np.sqrt(np.maximum(sq.astype(np.float32), 0)), 1)[:, 3]
    np.testing.assert_array_equal(got[members].numpy(), expected)
    assert bool(torch.isneginf(got[~members]).all())


def test_dense_tiles_use_the_float64_screen(monkeypatch) -> None:
    """Tiny sets put most pairs inside the radii: the float32 bound decides too little there, the
    float64 tile narrows it, and the values stay those of the brute force."""
    calls = []
    real_gram = knn._gram64_sq
    monkeypatch.setattr(knn, "_gram64_sq", lambda *a: calls.append(1) or real_gram(*a))
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(12, 5)).astype(np.float32), rng.normal(size=(11, 5)).astype(np.float32)
    assert compute_prdc_multi_k(real, fake, pr_k=3, dc_k=5) == pytest.approx(_brute(real, fake, 3, 5), abs=1e-12)
    assert calls


def test_reference_distances_do_not_depend_on_the_company_they_are_computed_in() -> None:
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.normal(size=(300, 96)).astype(np.float32))
    sq = knn.squared_norms(x)
    i, j = torch.as_tensor(rng.integers(0, 300, 500)), torch.as_tensor(rng.integers(0, 300, 500))
    together = knn.exact_distances(x, x, i, j, sq, sq)
    alone = torch.stack([knn.exact_distances(x, x, i[p : p + 1], j[p : p + 1], sq, sq)[0] for p in range(0, 500, 37)])
    assert torch.equal(together[::37], alone)
    assert torch.equal(knn.exact_distances(x, x, j, i, sq, sq), together)  # symmetric
    assert bool((knn.exact_distances(x, x, i, i, sq, sq) == 0).all())  # a row is at 0 from itself


def test_the_screening_interval_holds_the_reference_distance() -> None:
    """The bound of metrics.knn._Bounds on float32 Gram tiles of 2,048-d rows of large norm."""
    rng = np.random.default_rng(4)
    x = torch.as_tensor((rng.normal(size=(400, 2048)) * 3 + rng.normal(size=2048) * 20).astype(np.float32))
    rows = knn._Rows(x, x.mean(0, dtype=torch.float64), 400)
    a = rows.tile(slice(0, 400), slice(0, 400), rows, rows.centred(slice(0, 400)), rows.centred(slice(0, 400)))
    lo, hi = knn._bounds(x).interval(a, rows.s[:, None], rows.s[None, :], rows.raw[:, None], rows.raw[None, :])
    i, j = torch.meshgrid(torch.arange(400), torch.arange(400), indexing="ij")
    ref = knn.exact_distances(x, x, i.reshape(-1), j.reshape(-1), rows.sq, rows.sq).double().view(400, 400)
    assert bool((lo <= ref).all()) and bool((ref <= hi).all())
    apart = ~torch.eye(400, dtype=torch.bool)  # near 0 the square root widens any bound
    assert float(((hi - lo) / ref)[apart].max()) < 1e-3  # and it is tight enough to decide


def test_a_run_shares_its_k_nn_passes_with_its_replicates() -> None:
    """compute_metrics scores PRDC's half-samples with the run (Metric.compute_replicated); the
    replicate values are those of computing each half-sample on its own."""
    from harness.core.metric import MetricInputs
    from harness.core.options import MetricOptions, SampleMetricOptions
    from harness.planner import compute_metrics, half_sample_replicates, metric_named

    rng = np.random.default_rng(5)
    fake, real = rng.normal(size=(120, 6)).astype(np.float32), rng.normal(size=(130, 6)).astype(np.float32)
    inputs = MetricInputs(seed=7, fake_features=fake, real_features=real, feature_extractor="identity", feature_dim=6)
    options = MetricOptions(sample=SampleMetricOptions())
    prdc = metric_named("prdc")
    assert prdc.compute_replicated is not None
    entries, _ = compute_metrics([prdc], inputs, options, replicates=5, requested=("prdc",))
    alone = half_sample_replicates([prdc], inputs, options, 5)
    for key in ("precision", "recall", "density", "coverage"):
        assert entries[key]["uncertainty"]["replicates"] == alone[key]["replicates"]
        assert entries[key]["value"] == compute_metrics([prdc], inputs, options)[0][key]["value"]
