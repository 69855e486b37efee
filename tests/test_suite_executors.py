"""A suite's (row, seed) jobs dispatched through submitit's local executor and through the local
process pool give the records of a sequential run, train each distinct model once, and resume
(issue 14, item 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.leaderboard.execute import difference


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


SUITE = """
name: tiny
title: tiny
dataset: {train: moons-train, eval: moons-test}
seeds: [0, 1]
defaults:
  train: {steps: 20, batch_size: 64, num_train: 300}
  eval: {metrics: [fid, nfe], num_samples: 100, feature_extractor: identity, bootstrap: 0}
columns: [fid, nfe_mean]
rows:
  - {id: fm, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, eval: {sampler: euler, steps: 4}}
  - {id: fm8, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, eval: {sampler: euler, steps: 8}}
  - {id: ft, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}, init: fm, train: {steps: 10}, seeds: [0]}
claims: []
"""


def _records(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in sorted(results.rglob("seed*.json"))}


def test_suite_jobs_through_submitit_local_and_the_process_pool_match_a_sequential_run(tmp_path, cache_dir, capsys):
    pytest.importorskip("submitit")  # a test dependency: declared in the [test] extra
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)

    def run(name: str, *extra: str) -> dict[str, dict]:
        args = ["leaderboard", "--suite", str(suite), "--results", str(tmp_path / name / "results"), "--out",
                str(tmp_path / name / "lb"), "--work-dir", str(tmp_path / name / "work"), "--quiet", "--device", "cpu"]
        assert main([*args, *extra]) == 0
        return _records(tmp_path / name / "results")

    sequential = run("sequential", "--jobs", "1")
    submitted = run("submitit", "--executor", "submitit-local")
    pooled = run("pool", "--jobs", "2")
    assert len(sequential) == 5 and sequential.keys() == submitted.keys() == pooled.keys()
    for key, record in sequential.items():
        assert difference(record, submitted[key]) is None, (key, difference(record, submitted[key]))
        assert difference(record, pooled[key]) is None, (key, difference(record, pooled[key]))
    # fm and fm8 share one model per seed: trained once, by one job
    checkpoints = [p for p in (tmp_path / "submitit" / "work" / "checkpoints").glob("*.pt") if ".step" not in p.name]
    assert len(checkpoints) == 3
    assert any((tmp_path / "submitit" / "work" / "submitit").rglob("*_result.pkl"))  # submitit ran the jobs
    # resumable as before: a rerun through the pool finds every unit done
    shutil.rmtree(tmp_path / "pool" / "lb")
    before = {k: json.dumps(v) for k, v in pooled.items()}
    assert {k: json.dumps(v) for k, v in run("pool", "--jobs", "2").items()} == before
