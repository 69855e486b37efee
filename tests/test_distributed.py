"""Sharded evaluation under torchrun (two gloo ranks on the CPU) gives one process's numbers; a
failing rank ends the job with its error and nothing written (issue 14, item 2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.leaderboard.execute import _result_part, _timing_keys

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path: Path, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m harness.cli ARGS`` on gloo (the CPU), 120 s at most."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "harness.cli", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "GENBENCH_CACHE": str(tmp_path / "cache"), **(env or {})}
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def _metrics(path: Path) -> dict:
    """The record's metrics without the timings (samples/s, wall time), which no two runs share."""
    return _result_part(json.loads(path.read_text())["metrics"], _timing_keys())


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_two_gloo_ranks_give_one_process_numbers_for_samples_and_models(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "samples.npz", x=rng.normal(size=(90, 2)).astype(np.float32))
    # 90 rows in batches of 16: six batches, rank 0 gets three and the last short one is rank 1's
    sample_args = ["eval-samples", "--samples", str(tmp_path / "samples.npz"), "--reference", "moons-test",
                   "--num-samples", "90", "--feature-extractor", "identity", "--metrics", "fid,kid,prdc,mmd",
                   "--batch-size", "16", "--device", "cpu", "--quiet"]
    assert main([*sample_args, "--json", str(tmp_path / "one.json")]) == 0
    run = _torchrun([*sample_args, "--json", str(tmp_path / "two.json")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _metrics(tmp_path / "two.json") == _metrics(tmp_path / "one.json")
    record = json.loads((tmp_path / "two.json").read_text())
    assert record["run"]["distributed"]["world_size"] == 2 and record["run"]["distributed"]["backend"] == "gloo"
    assert run.stdout.count("record written to") == 1  # rank 0 alone prints and writes

    # a model: samples (sharded sampling, NFE summed), exact bpd, the ELBO/IWAE bounds, active units
    model_args = ["eval", "--model", "linear-gaussian-vae", "--model-arg", "data_dim=2", "--model-arg", "latent_dim=2",
                  "--dataset", "moons-test", "--num-samples", "70", "--batch-size", "16", "--device", "cpu",
                  "--feature-extractor", "identity", "--quiet", "--replicates", "0"]
    assert main([*model_args, "--json", str(tmp_path / "m1.json")]) == 0
    run = _torchrun([*model_args, "--json", str(tmp_path / "m2.json")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = _metrics(tmp_path / "m1.json"), _metrics(tmp_path / "m2.json")
    assert {"fid", "bpd", "elbo_bpd", "iwae_bpd", "active_units"} <= set(one)
    assert two == one

    # the probability-flow ODE likelihood (per-example solves) and its NFE
    ode_args = ["eval", "--model", "gaussian-vp", "--model-arg", "dim=2", "--dataset", "gaussian-2-test", "--metrics", "bpd",
                "--num-samples", "40", "--batch-size", "16", "--device", "cpu", "--quiet", "--ode-divergence", "exact"]
    assert main([*ode_args, "--json", str(tmp_path / "o1.json")]) == 0
    run = _torchrun([*ode_args, "--json", str(tmp_path / "o2.json")], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _metrics(tmp_path / "o2.json") == _metrics(tmp_path / "o1.json")


FAILING_MODEL = '''
import torch
from harness.core.protocols import DataSpec


class Failing:
    """Samples zeros, but fails for any batch holding example 16 or later (rank 1's batch here)."""

    data_spec = DataSpec(shape=(2,), kind="continuous", value_range=(-5.0, 5.0))

    def sample(self, n, rng):
        if max(rng.indices) >= 16:
            raise ValueError(f"planted failure in the batch of examples {rng.indices[0]}..{rng.indices[-1]}")
        return rng.normal((2,))


def make():
    return Failing()
'''


def test_a_failing_rank_ends_the_job_with_its_error_and_nothing_is_written(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING_MODEL)
    out = tmp_path / "never.json"
    run = _torchrun(["eval", "--entry", f"{tmp_path / 'failing.py'}:make", "--dataset", "moons-test",
                     "--num-samples", "32", "--batch-size", "16", "--device", "cpu", "--feature-extractor", "identity",
                     "--metrics", "fid", "--quiet", "--json", str(out)], tmp_path)
    assert run.returncode != 0
    assert "(rank 1 of 2): error: planted failure in the batch of examples 16..31" in run.stderr
    assert not out.exists()


SUITE = """
name: tiny
title: tiny
dataset: {train: moons-train, eval: moons-test}
seeds: [0]
defaults:
  train: {steps: 20, batch_size: 64, num_train: 300}
  eval: {metrics: [fid, nfe, bpd], num_samples: 60, batch_size: 16, feature_extractor: identity, bootstrap: 0}
columns: [fid, nfe_mean]
rows:
  - {id: fm, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, eval: {sampler: euler, steps: 4}}
claims: []
"""


def test_the_leaderboard_under_torchrun_trains_once_and_writes_the_one_process_record(tmp_path, cache_dir):
    (tmp_path / "suite.yaml").write_text(SUITE)

    def args(name: str) -> list[str]:
        return ["leaderboard", "--suite", str(tmp_path / "suite.yaml"), "--results", str(tmp_path / name / "results"),
                "--out", str(tmp_path / name / "lb"), "--work-dir", str(tmp_path / name / "work"), "--device", "cpu",
                "--quiet"]

    assert main(args("one")) == 0
    run = _torchrun(args("two"), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (tmp_path / n / "results" / "tiny" / "fm" / "seed0.json" for n in ("one", "two"))
    assert _metrics(two) == _metrics(one)
    assert json.loads(two.read_text())["run"]["distributed"]["world_size"] == 2
    assert len(list((tmp_path / "two" / "work" / "checkpoints").glob("*.pt"))) == 2  # trained once: final + 3/4
