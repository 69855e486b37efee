"""Benchmarks for the sample-metric path, each against its anchor in the same run, as a ratio.

1. ``eval-samples`` (FID+KID+IS+PRDC, Inception features) against ``torch_fidelity.calculate_metrics``
   (FID+KID+IS+PRC) on the same PNG folders and the same Inception weights file. Both sides
   extract features once and share them across metrics.
2. The FID trace square root at d=2048: genbench's eigh route against ``scipy.linalg.sqrtm``
   (pytorch-fid, clean-fid) and torch-fidelity's ``eigvals`` of Σ1Σ2.

Not a test: timings live here, never in assertions. Usage::

    python benchmarks/bench_eval_samples.py [--images 200] [--repeats 3] [--skip-eval]

Without ``--inception-weights`` it builds seeded random weights in the real file format (timing
does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_trace_sqrt(repeats: int, d: int = 2048, n: int = 5000) -> None:
    import scipy.linalg

    from metrics.fid import trace_sqrt_product

    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) @ (np.eye(d) + 0.01 * rng.normal(size=(d, d)))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def ours() -> float:
        return trace_sqrt_product(s1, s2)

    def sqrtm() -> float:
        return float(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)

    def eigvals() -> float:
        return float(np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum())

    t_ours, _ = _median_time(ours, repeats)
    t_sqrtm, _ = _median_time(sqrtm, repeats)
    t_eig, _ = _median_time(eigvals, repeats)
    v_ours, v_sqrtm, v_eig = ours(), sqrtm(), eigvals()
    print(f"trace sqrt, d={d}, covariances from n={n} (median of {repeats}):")
    print(f"  genbench eigh route      {t_ours:7.2f} s   value {v_ours:.10g}")
    print(f"  scipy.linalg.sqrtm       {t_sqrtm:7.2f} s   value {v_sqrtm:.10g}   ratio sqrtm/genbench {t_sqrtm / t_ours:.2f}")
    print(f"  numpy eigvals(S1 S2)     {t_eig:7.2f} s   value {v_eig:.10g}   ratio eigvals/genbench {t_eig / t_ours:.2f}")
    print(f"  relative difference vs sqrtm: {abs(v_ours - v_sqrtm) / abs(v_sqrtm):.2e}")


def bench_eval(images: int, repeats: int, weights: str | None, replicates: int) -> None:
    import torch_fidelity
    from PIL import Image

    from harness.eval_samples import SampleEvalConfig, evaluate_samples

    tmp = Path(tempfile.mkdtemp(prefix="genbench-bench-"))
    if weights is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from inception_weights import make_random_inception_weights

        weights = str(make_random_inception_weights(tmp / "inception.pth"))
    rng = np.random.default_rng(0)
    dirs = []
    for name in ("fake", "real"):
        folder = tmp / name
        folder.mkdir()
        for i in range(images):
            Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        dirs.append(str(folder))
    subset = min(1000, images)

    def ours() -> dict:
        cfg = SampleEvalConfig.from_dict({"samples": dirs[0], "reference": dirs[1], "inception_weights": weights,
                                          "kid_subset_size": subset, "use_cache": False, "replicates": replicates})
        return evaluate_samples(cfg, progress=False)

    def anchor() -> dict:
        return torch_fidelity.calculate_metrics(
            input1=dirs[0], input2=dirs[1], cuda=False, fid=True, isc=True, kid=True, prc=True,
            feature_extractor="inception-v3-compat", feature_layer_prc="2048", kid_subset_size=subset,
            feature_extractor_weights_path=weights, cache=False, verbose=False,
        )

    t_ours, all_ours = _median_time(ours, repeats)
    t_anchor, all_anchor = _median_time(anchor, repeats)
    print(f"eval-samples (replicates {replicates}) vs torch-fidelity, {images}+{images} PNG 32x32, all metrics "
          f"(median of {repeats}):")
    print(f"  genbench        {t_ours:7.1f} s  runs {[round(t, 1) for t in all_ours]}")
    print(f"  torch-fidelity  {t_anchor:7.1f} s  runs {[round(t, 1) for t in all_anchor]}")
    print(f"  ratio genbench/torch-fidelity {t_ours / t_anchor:.2f}")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # figures appear as they are measured
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-sqrt", action="store_true")
    parser.add_argument("--replicates", type=int, default=10, help="genbench's uncertainty replicates (0: none)")
    args = parser.parse_args()
    if not args.skip_sqrt:
        bench_trace_sqrt(args.repeats)
    if not args.skip_eval:
        bench_eval(args.images, args.repeats, args.inception_weights, args.replicates)


if __name__ == "__main__":
    main()
