"""pytest-benchmark: ``eval-samples`` at 10,000 and 50,000 rows of 2,048 float32 features (issue 13).

Run explicitly, on an otherwise idle machine::

    python -m pytest benchmarks/test_bench_scale.py --benchmark-only -o addopts="" -s

Each case writes two npz files of Gaussian rows (generated: scale 1.05, so no metric sits on a
bound), runs ``genbench eval-samples --feature-extractor identity --metrics fid,kid,prdc`` with the
default 10 half-sample replicates in a fresh interpreter, and reports its wall time and peak RSS
(``getrusage`` of the child). The peak is asserted against the bound the README states:
0.55 GB (interpreter, torch, numpy) + 0.5 GB (FID's d × d float64 sums, covariances and
square-root factors at d = 2,048) + 9 · N · d · 4 bytes (both sets as loaded and as features,
the replicates' half-set copies and transient float64 conversions; measured 8.2 per row).
``GENBENCH_BENCH_ROWS=10000`` runs one size only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark
D = 2048
SIZES = [int(n) for n in os.environ.get("GENBENCH_BENCH_ROWS", "10000,50000").split(",")]


def memory_bound_bytes(n: int, d: int = D) -> int:
    """The stated peak-RSS bound of the run (module docstring), in bytes."""
    return int(0.55e9 + 0.5e9 + 9 * n * d * 4)


def _write(path: Path, n: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    x = np.empty((n, D), dtype=np.float32)
    for lo in range(0, n, 5000):
        x[lo : lo + 5000] = rng.normal(size=(min(5000, n - lo), D)) * scale
    np.savez(path, arr_0=x)


@pytest.mark.benchmark(group="eval-samples scale")
@pytest.mark.parametrize("n", SIZES)
def test_eval_samples_scale(benchmark, tmp_path, n):
    samples, reference, out = tmp_path / "samples.npz", tmp_path / "reference.npz", tmp_path / "record.json"
    _write(samples, n, 1, 1.05)
    _write(reference, n, 2, 1.0)
    cmd = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())", "eval-samples", "--samples", str(samples), "--reference", str(reference),
           "--feature-extractor", "identity", "--metrics", "fid,kid,prdc", "--no-cache", "--json", str(out)]
    timing: dict[str, float] = {}

    def run() -> None:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        timing["wall_time_s"] = time.perf_counter() - start

    benchmark.pedantic(run, rounds=1, iterations=1)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    record = json.loads(out.read_text())
    metrics = record["metrics"]
    assert {"fid", "kid_mean", "precision", "recall", "density", "coverage"} <= set(metrics)
    assert all("uncertainty" in metrics[k] for k in ("precision", "density", "fid"))
    print(f"\n{n} x {D}: wall {timing['wall_time_s']:.1f} s, peak RSS {peak / 1e9:.2f} GB "
          f"(bound {memory_bound_bytes(n) / 1e9:.2f} GB)")
    benchmark.extra_info.update({"rows": n, "peak_rss_gb": peak / 1e9, "bound_gb": memory_bound_bytes(n) / 1e9})
    assert peak <= memory_bound_bytes(n)
