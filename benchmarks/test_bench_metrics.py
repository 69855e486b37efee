"""pytest-benchmark: metric kernels against their anchors in the same run (issue 14, benchmarks).

Run explicitly: ``python -m pytest benchmarks/test_bench_metrics.py --benchmark-only -o addopts=""``.
Each group times genbench and its anchor on the same inputs; ``--benchmark-group-by=group`` puts
them side by side, and the ratio is the one the README quotes. Sizes follow the issue:

* ``trace-sqrt``: the FID trace square root at d = 2,048 (covariances from 5,000 rows): genbench's
  factor route (``metrics.fid.trace_sqrt_product``) against ``scipy.linalg.sqrtm`` (pytorch-fid, clean-fid) and numpy ``eigvals`` of Σ1Σ2
  (torch-fidelity);
* ``prdc``: precision/recall/density/coverage at 5,000 × 5,000 × 2,048 float32 features, against
  the ``prdc`` package (Naeem et al. 2020), with the same values asserted.

Set ``GENBENCH_BENCH_SCALE=0.2`` to run everything at a fifth of the rows (a quick look).
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark
SCALE = float(os.environ.get("GENBENCH_BENCH_SCALE", "1"))
N, D = int(5000 * SCALE), 2048


@pytest.fixture(scope="module")
def covariances():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, D))
    b = rng.normal(size=(N, D)) @ (np.eye(D) + 0.01 * rng.normal(size=(D, D)))
    return np.cov(a, rowvar=False), np.cov(b, rowvar=False)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, D)).astype(np.float32), (rng.normal(size=(N, D)) + 0.1).astype(np.float32)


@pytest.mark.benchmark(group="trace-sqrt")
@pytest.mark.parametrize("impl", ["genbench", "scipy sqrtm", "numpy eigvals"])
def test_trace_sqrt(benchmark, covariances, impl):
    import scipy.linalg

    from metrics.fid import trace_sqrt_product

    s1, s2 = covariances
    fn = {"genbench": lambda: trace_sqrt_product(s1, s2),
          "scipy sqrtm": lambda: float(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real),
          "numpy eigvals": lambda: float(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum())}[impl]
    value = benchmark.pedantic(fn, rounds=3, iterations=1)
    assert value == pytest.approx(trace_sqrt_product(s1, s2), rel=1e-6)


@pytest.mark.benchmark(group="prdc")
@pytest.mark.parametrize("impl", ["genbench", "prdc package"])
def test_prdc(benchmark, features, impl):
    import prdc

    from metrics.prdc import compute_prdc_multi_k

    real, fake = features

    def anchor():
        with contextlib.redirect_stdout(io.StringIO()):
            return prdc.compute_prdc(real, fake, nearest_k=5)

    ours = lambda: compute_prdc_multi_k(real, fake, pr_k=5, dc_k=5)  # noqa: E731  (prdc uses one k)
    values = benchmark.pedantic(ours if impl == "genbench" else anchor, rounds=2, iterations=1)
    reference = anchor() if impl == "genbench" else values
    assert {k: float(v) for k, v in values.items()} == pytest.approx({k: float(v) for k, v in reference.items()}, abs=1e-6)
