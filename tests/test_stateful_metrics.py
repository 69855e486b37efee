"""The stateful metrics of ``metrics.streaming`` give the batch pipeline's numbers.

Each metric is updated over uneven batches and compared with the pipeline on the concatenated
input: ``harness.features.extract_features`` + ``harness.eval_samples.feature_inputs`` + the
registry metric's ``compute`` (the path of ``genbench eval-samples``), ``metrics.likelihood.exact_bpd``
and ``harness.runner.draw_samples`` (``genbench eval``). Then merge, reset, the errors, and a
two-process gloo ``sync()`` (run as subprocesses with a timeout, so a hang fails).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.nfe import NFECount
from harness.core.options import MetricOptions, SampleMetricOptions
from harness.core.protocols import DataSpec
from metrics import METRICS
from metrics.bpd import dequantization_offset_bits
from metrics.fid import fid_of_rows
from metrics.inception_score import inception_score
from metrics.kid import kernel_inception_distance
from metrics.prdc import compute_prdc_multi_k
from metrics.streaming import KID, NFE, PRDC, BitsPerDim, FrechetDistance, InceptionScore

D, K = 6, 12
SEED = 3
SPLITS, SUBSETS, SUBSET_SIZE = 5, 15, 40
OPTIONS = MetricOptions(sample=SampleMetricOptions(is_splits=SPLITS, kid_subsets=SUBSETS, kid_subset_size=SUBSET_SIZE))
REAL_SIZES = [37, 100, 1, 64, 55, 43]  # 300 rows
FAKE_SIZES = [64, 2, 91, 50, 50]  # 257 rows


class ToyExtractor:
    """Features = the rows; logits elementwise in the rows (no BLAS: bitwise the same for any batching)."""

    name = "toy"
    input_kind = "tabular"
    feature_dim = D
    num_classes = K

    def protocol(self) -> dict:
        return {"name": self.name}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(torch.float32)
        return {"features": x.clone(), "logits": torch.cat([3 * x, -2 * x], dim=1)}


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(sum(REAL_SIZES), D)).astype(np.float32)
    fake = (rng.normal(size=(sum(FAKE_SIZES), D)) * 1.2 + 0.3).astype(np.float32)
    return real, fake


def _batches(x: np.ndarray, sizes: list[int]) -> list[tuple[int, np.ndarray]]:
    """(start, rows) of uneven consecutive batches."""
    starts = np.cumsum([0, *sizes[:-1]])
    return [(int(s), x[s : s + n]) for s, n in zip(starts, sizes)]


@pytest.fixture(scope="module")
def pipeline() -> dict[str, float]:
    """Every feature metric as ``genbench eval-samples`` computes it (batches of 64)."""
    from harness.datasets import Dataset
    from harness.eval_samples import feature_inputs
    from harness.features import extract_features

    real, fake = _data()
    extractor = ToyExtractor()
    sets = {name: extract_features(Dataset(name=name, x=x, labels=None, kind="tabular", source="test"), extractor,
                                   batch_size=64, desc=name, progress=False)
            for name, x in (("real", real), ("fake", fake))}
    inputs = feature_inputs(sets["fake"], sets["real"], extractor, seed=SEED)
    out: dict[str, float] = {}
    for name in ("fid", "is", "kid", "prdc"):
        out.update({k: e.value for k, e in METRICS.get(name).compute(inputs, OPTIONS).items()})
    return out


def _stateful(extractor=None):
    return (FrechetDistance(extractor), InceptionScore(extractor, splits=SPLITS, seed=SEED),
            KID(extractor, subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=SEED), PRDC(extractor))


def _feed(metrics, real: np.ndarray, fake: np.ndarray, *, logits_of=None) -> None:
    fid, isc, kid, prdc = metrics
    for _, x in _batches(real, REAL_SIZES):
        for m in (fid, kid, prdc):
            m.update(x, real=True)
    for i, (_, x) in enumerate(_batches(fake, FAKE_SIZES)):
        as_tensor = torch.from_numpy(x) if i % 2 else x  # numpy and torch batches alike
        for m in (fid, kid, prdc):
            m.update(as_tensor, real=False)
        isc.update(as_tensor if logits_of is None else logits_of(x))


def _values(metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in metrics:
        out.update(m.compute())
    return out


def _assert_equal_to_pipeline(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    np.testing.assert_allclose(got["fid"], want["fid"], rtol=1e-9)
    for key in set(want) - {"fid"}:
        assert got[key] == want[key], key  # same rows, same order, same code: bit for bit


def _logits(x: np.ndarray) -> torch.Tensor:
    return ToyExtractor()(torch.from_numpy(x))["logits"]


def test_features_in_uneven_batches_give_the_pipeline_numbers(pipeline):
    real, fake = _data()
    metrics = _stateful()
    _feed(metrics, real, fake, logits_of=_logits)
    got = _values(metrics)
    _assert_equal_to_pipeline(got, pipeline)
    # and the stand-alone functions on the concatenated rows
    np.testing.assert_allclose(got["fid"], fid_of_rows(fake, real), rtol=1e-9)
    assert (got["is_mean"], got["is_std"]) == inception_score(_logits(fake), splits=SPLITS, seed=SEED)
    assert (got["kid_mean"], got["kid_std"]) == kernel_inception_distance(fake, real, num_subsets=SUBSETS,
                                                                          subset_size=SUBSET_SIZE, seed=SEED)
    assert {k: got[k] for k in ("precision", "recall", "density", "coverage")} == compute_prdc_multi_k(real, fake)


def test_an_extractor_inside_the_metric_gives_the_pipeline_numbers(pipeline):
    real, fake = _data()
    metrics = _stateful(ToyExtractor())
    _feed(metrics, real, fake)
    _assert_equal_to_pipeline(_values(metrics), pipeline)
    assert metrics[0].label == "FD[toy]"


def test_merge_equals_one_object_updated_with_both(pipeline):
    real, fake = _data()
    whole = _stateful()
    _feed(whole, real, fake, logits_of=_logits)
    first, second = _stateful(), _stateful()
    cut_r, cut_f = 137, 157  # batch boundaries of REAL_SIZES / FAKE_SIZES
    for m, other in zip(first, second):
        for part, x, cut in (("real", real, cut_r), ("fake", fake, cut_f)):
            if isinstance(m, InceptionScore):
                if part == "fake":
                    m.update(_logits(x[:cut]))
                    other.update(_logits(x[cut:]))
            else:
                m.update(x[:cut], real=part == "real")
                other.update(x[cut:], real=part == "real")
    for m, other in zip(first, second):
        assert m.merge(other) is m
    merged, single = _values(first), _values(whole)
    np.testing.assert_allclose(merged["fid"], single["fid"], rtol=1e-12)
    assert {k: v for k, v in merged.items() if k != "fid"} == {k: v for k, v in single.items() if k != "fid"}
    assert second[2]._state["fake"].n == sum(FAKE_SIZES) - cut_f  # other unchanged


def test_start_indices_restore_the_global_order():
    """Batches fed out of order with start= give the in-order numbers (the ranks of my_share)."""
    real, fake = _data()
    in_order = KID(subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=SEED)
    shuffled = KID(subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=SEED)
    is_in_order, is_shuffled = InceptionScore(splits=SPLITS, seed=SEED), InceptionScore(splits=SPLITS, seed=SEED)
    for part, x, sizes in (("real", real, REAL_SIZES), ("fake", fake, FAKE_SIZES)):
        batches = _batches(x, sizes)
        for start, b in batches:
            in_order.update(b, real=part == "real", start=start)
        for start, b in batches[::-1]:
            shuffled.update(b, real=part == "real", start=start)
    for start, b in _batches(fake, FAKE_SIZES)[::-1]:
        is_shuffled.update(_logits(b), start=start)
    is_in_order.update(_logits(fake))
    assert shuffled.compute() == in_order.compute()
    assert is_shuffled.compute() == is_in_order.compute()
    with pytest.raises(ValueError, match="overlap"):
        is_shuffled.update(_logits(fake[:3]), start=1).compute()
    mixed = InceptionScore(splits=2)
    mixed.update(_logits(fake[:4]), start=0).update(_logits(fake[4:8]))
    with pytest.raises(ValueError, match="every batch or none"):
        mixed.compute()


def test_reset_and_a_kept_reference(pipeline):
    real, fake = _data()
    fid = FrechetDistance(reset_real=False)
    kid = KID(subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=SEED, reset_real=False)
    for m in (fid, kid):
        m.update(real, real=True)
        m.update(fake[::-1] + 5.0, real=False)  # a first "evaluation"
        m.compute()
        m.reset()
        with pytest.raises(ValueError, match="fake set has 0 rows"):
            m.compute()
        m.update(fake, real=False)
    np.testing.assert_allclose(fid.compute()["fid"], pipeline["fid"], rtol=1e-9)
    assert kid.compute() == {k: pipeline[k] for k in ("kid_mean", "kid_std")}
    full = PRDC().update(real, real=True).update(fake, real=False)
    full.reset()
    assert full.memory_bytes() == 0
    full.update(fake, real=False)
    with pytest.raises(ValueError, match="real set has 0 rows"):
        full.compute()


def test_set_reference_from_statistics_features_or_gaussian_stats(pipeline):
    from metrics.fid import GaussianStats

    real, fake = _data()
    stats = GaussianStats().update(real)
    for reference in (stats, (stats.mean, stats.cov), real):
        fid = FrechetDistance().set_reference(reference)
        for _, x in _batches(fake, FAKE_SIZES):
            fid.update(x, real=False)
        np.testing.assert_allclose(fid.compute()["fid"], pipeline["fid"], rtol=1e-9)
        fid.reset()  # a fixed reference survives reset
        fid.update(fake, real=False)
        np.testing.assert_allclose(fid.compute()["fid"], pipeline["fid"], rtol=1e-9)
        with pytest.raises(ValueError, match="set_reference"):
            fid.update(real, real=True)
    kid = KID(subsets=SUBSETS, subset_size=SUBSET_SIZE, seed=SEED).set_reference(torch.from_numpy(real))
    assert kid.update(fake, real=False).compute() == {k: pipeline[k] for k in ("kid_mean", "kid_std")}


class _ToyLikelihood:
    """log p(x) of an isotropic Gaussian with a per-dimension scale, summed over the dimensions."""

    def __init__(self, spec: DataSpec) -> None:
        self.data_spec = spec

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(len(x), -1).to(torch.float64) / 0.7
        return (-0.5 * z**2 - math.log(0.7) - 0.5 * math.log(2 * math.pi)).sum(dim=1)


@pytest.mark.parametrize("kind", ["continuous rows", "dequantized uint8 images"])
def test_bits_per_dim_equals_exact_bpd(kind):
    from harness.core.rng import BatchRNG
    from metrics.likelihood import exact_bpd, model_inputs

    rng = np.random.default_rng(1)
    if kind == "continuous rows":
        spec, x = DataSpec(shape=(5,)), torch.from_numpy(rng.normal(size=(203, 5)).astype(np.float32))
        offset = 0.0
    else:
        spec = DataSpec(shape=(1, 3, 3), value_range=(-1.0, 1.0))
        x = torch.from_numpy(rng.integers(0, 256, size=(203, 1, 3, 3), dtype=np.uint8))
        offset = dequantization_offset_bits(spec.value_range)
        assert offset == 7.0
    model = _ToyLikelihood(spec)
    want = exact_bpd(model, [(lo, x[lo : lo + 50]) for lo in range(0, len(x), 50)], spec, seed=SEED)
    bpd = BitsPerDim(spec.num_dims, offset_bits=offset)
    for start, n in zip([0, 17, 18, 118], [17, 1, 100, 85]):  # uneven batches; the loop makes its own inputs
        inputs, _, _ = model_inputs(x[start : start + n], spec, BatchRNG(SEED, range(start, start + n)))
        bpd.update(model.log_prob(inputs))
    got = bpd.compute()
    np.testing.assert_allclose(got["bpd"], want["value"], rtol=1e-12)
    np.testing.assert_allclose(got["bpd_stderr"], want["stderr"], rtol=1e-12)
    assert bpd.n == want["n"] == 203 and bpd.memory_bytes() == 32
    half = BitsPerDim(spec.num_dims, offset_bits=offset)
    half.update(model.log_prob(model_inputs(x[:100], spec, BatchRNG(SEED, range(100)))[0]))
    rest = BitsPerDim(spec.num_dims, offset_bits=offset)
    rest.update(model.log_prob(model_inputs(x[100:], spec, BatchRNG(SEED, range(100, 203)))[0]))
    merged = half.merge(rest).compute()
    np.testing.assert_allclose([merged["bpd"], merged["bpd_stderr"]], [want["value"], want["stderr"]], rtol=1e-12)


class _ToySampler:
    """Calls its network 3 times on the batch and once more on the first half (an adaptive-like count)."""

    def __init__(self) -> None:
        self.net = torch.nn.Identity()
        self.data_spec = DataSpec(shape=(2,))

    def sample(self, n: int, rng) -> torch.Tensor:
        x = rng.normal((2,))
        for _ in range(3):
            x = self.net(x)
        self.net(x[: (n + 1) // 2])
        return x


def test_nfe_equals_draw_samples():
    from harness.runner import ModelEvalConfig, draw_samples

    model = _ToySampler()
    cfg = ModelEvalConfig(dataset="moons-test", model="toy", num_samples=70, batch_size=32, device="cpu", seed=SEED)
    _, info = draw_samples(model, cfg, progress=False)
    from harness.core.rng import BatchRNG

    nfe = NFE()
    for lo in range(0, 70, 32):  # the loop's own batches, as the pipeline draws them
        n = min(32, 70 - lo)
        with nfe.counting(model, num_samples=n):
            model.sample(n, BatchRNG(SEED, range(lo, lo + n)))
    assert nfe.compute() == {"nfe_mean": info["nfe_per_sample"]}
    assert nfe.counts["forward_calls"] == info["nfe"]["forward_calls"] == 12
    assert isinstance(model.net, torch.nn.Identity)  # unwrapped again
    other = NFE().update(NFECount(forward_calls=4, examples=40, vjp_calls=0), num_samples=10)
    assert nfe.merge(other).compute()["nfe_mean"] == (info["nfe"]["examples_evaluated"] + 40) / 80
    assert nfe.reset().memory_bytes() == 32
    with pytest.raises(ValueError, match="no samples counted"):
        nfe.compute()


def test_bad_inputs_are_one_line_errors():
    real, fake = _data()
    cases = [
        (lambda: FrechetDistance().update(real, real=True).update(fake[:, :3], real=False), "dim 3, expected 6"),
        (lambda: KID().update(real[None], real=True), "2-D"),
        (lambda: PRDC().update(np.full((4, D), np.nan), real=False), "NaN"),
        (lambda: InceptionScore().update(torch.tensor([[1.0, float("inf")]])), "NaN or Inf"),
        (lambda: FrechetDistance().compute(), "fake set has 0 rows"),
        (lambda: FrechetDistance().update(real, real=True).update(fake[:1], real=False).compute(), "at least 2"),
        (lambda: InceptionScore(splits=10).update(_logits(fake[:9])).compute(), "needs at least 10"),
        (lambda: KID(max_rows=100).update(real[:60], real=True).update(real[:41], real=True), "max_rows=100"),
        (lambda: KID(max_rows=100).update(real[:60], real=True).merge(KID(max_rows=100).update(real[:60], real=True)),
         "max_rows=100"),
        (lambda: KID(seed=1).merge(KID(seed=2)), "settings differ"),
        (lambda: InceptionScore(extractor=type("NoLogits", (), {"name": "x", "num_classes": None})()), "with logits"),
        (lambda: BitsPerDim(4).update(torch.zeros(3, 4)), "1-D"),
        (lambda: BitsPerDim(4).update(torch.tensor([1.0, float("nan")])), "NaN"),
        (lambda: BitsPerDim(0), "num_dims"),
        (lambda: BitsPerDim(4).compute(), "no examples"),
        (lambda: NFE().update(NFECount(), num_samples=0), "num_samples"),
        (lambda: KID().update(real, real=True, start=-1), "start"),
        (lambda: KID(subsets=0), "kid_subsets"),
        (lambda: FrechetDistance().set_reference((np.zeros(3), np.eye(2))), "mu"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value), str(err.value)
    with pytest.raises(TypeError, match="cannot merge"):
        KID().merge(PRDC())
    kept = KID(max_rows=100).update(real[:10], real=False).update(real[:60], real=True)
    with pytest.raises(ValueError, match="max_rows"):  # the real set fits, the fake one does not: nothing merges
        kept.merge(KID(max_rows=100).update(real[:20], real=True).update(real[:91], real=False))
    assert (kept._state["real"].n, kept._state["fake"].n) == (60, 10)


def test_memory_is_as_stated():
    real, _ = _data()
    fid = FrechetDistance().update(real, real=True)
    assert fid.memory_bytes() == (D * D + 2 * D + 1) * 8
    fid.update(real, real=True)  # FID's state does not grow with N
    assert fid.memory_bytes() == (D * D + 2 * D + 1) * 8
    kid = KID().update(real, real=True)
    assert kid.memory_bytes() == real.size * 4
    isc = InceptionScore().update(_logits(real))
    assert isc.memory_bytes() == len(real) * K * 4


def test_sync_outside_a_process_group_is_a_no_op(pipeline):
    real, fake = _data()
    metrics = _stateful()
    _feed(metrics, real, fake, logits_of=_logits)
    for m in metrics:
        assert m.sync() is m
    _feed(metrics, real[:0], fake[:0], logits_of=_logits)  # still writable: nothing was made global
    _assert_equal_to_pipeline(_values(metrics), pipeline)


# ---------------------------------------------------------------- two processes, gloo

WORLD = 2


def _rank_main(rank: int, out: str) -> None:
    """One rank of the sync test: every rank-th batch of each set (start= given), sync, compute."""
    import datetime

    import torch.distributed as dist

    from harness.core.distributed import my_share

    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    real, fake = _data()
    fid, isc, kid, prdc = _stateful()
    bpd, nfe = BitsPerDim(D), NFE()
    for start, x in my_share(_batches(real, REAL_SIZES)):
        for m in (fid, kid, prdc):
            m.update(x, real=True, **({"start": start} if m is not fid else {}))
    for start, x in my_share(_batches(fake, FAKE_SIZES)):
        for m in (fid, kid, prdc):
            m.update(x, real=False, **({"start": start} if m is not fid else {}))
        isc.update(_logits(x), start=start)
        bpd.update(-(torch.from_numpy(x).double() ** 2).sum(1))
        nfe.update(NFECount(forward_calls=3, examples=3 * len(x)), num_samples=len(x))
    result: dict = {}
    for m in (fid, isc, kid, prdc, bpd, nfe):
        m.sync()
        result.update(m.compute())
        m.sync()  # a second sync without updates changes nothing
    result["again"] = {**fid.compute(), **kid.compute()}
    try:
        kid.update(fake[:2], real=False)
        result["update_after_sync"] = "no error"
    except ValueError as err:
        result["update_after_sync"] = str(err)
    # a second evaluation: the reference kept (reset_real=False), only the generated set re-synced
    keep = FrechetDistance(reset_real=False)
    for _, x in my_share(_batches(real, REAL_SIZES)):
        keep.update(x, real=True)
    keep.update(fake[::-1] + 1.0, real=False).sync()
    keep.compute()
    keep.reset()
    for _, x in my_share(_batches(fake, FAKE_SIZES)):
        keep.update(x, real=False)
    result["second_round_fid"] = keep.sync().compute()["fid"]
    result["rows_after_sync"] = kid._state["real"].n
    fixed = FrechetDistance().set_reference(real)  # every rank holds the whole reference: not gathered
    for _, x in my_share(_batches(fake, FAKE_SIZES)):
        fixed.update(x, real=False)
    result["set_reference_fid"] = fixed.sync().compute()["fid"]
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_over_two_gloo_processes_gives_the_one_process_values(tmp_path, pipeline):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), str(Path(__file__).parent)])}
    env.pop("WORLD_SIZE", None)
    outs = [tmp_path / f"rank{r}.json" for r in range(WORLD)]
    code = "import sys, test_stateful_metrics as t; t._rank_main(int(sys.argv[1]), sys.argv[2])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(outs[r])], env=env, cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the two-process sync did not finish in 120 s (a hang in a collective?)")
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    results = [json.loads(o.read_text()) for o in outs]

    real, fake = _data()
    bpd = BitsPerDim(D).update(-(torch.from_numpy(fake).double() ** 2).sum(1)).compute()
    for got in results:
        _assert_equal_to_pipeline({k: got[k] for k in pipeline}, pipeline)
        np.testing.assert_allclose([got["bpd"], got["bpd_stderr"]], [bpd["bpd"], bpd["bpd_stderr"]], rtol=1e-12)
        assert got["nfe_mean"] == 3.0
        assert got["again"] == {k: got[k] for k in ("fid", "kid_mean", "kid_std")}
        assert "call reset() first" in got["update_after_sync"]
        np.testing.assert_allclose(got["second_round_fid"], pipeline["fid"], rtol=1e-9)
        assert got["rows_after_sync"] == len(real)
        np.testing.assert_allclose(got["set_reference_fid"], pipeline["fid"], rtol=1e-9)
    assert results[0] == results[1]


def test_the_readme_training_loop_example_runs_and_its_fd_falls(capsys) -> None:
    """The README's training-loop example, executed as printed: FD against the data falls as the map trains."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("**Metrics in a training loop.**"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.split("\n")
    fds = [float(line.split()[1]) for line in lines if line.strip()]
    assert len(fds) == 3 and fds[2] < fds[1] < fds[0] / 3, fds
