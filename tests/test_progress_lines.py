"""Without a terminal, long work prints progress lines (issue 18, item 7): the leaderboard's training
and every evaluation phase, not only `genbench train`."""

from __future__ import annotations

import io

import pytest

from harness.core import heartbeat


def test_progress_prints_a_line_every_interval_and_ends_silently_when_short(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(heartbeat.sys, "stderr", stream)
    heartbeat.set_log_lines(True)
    try:
        assert list(heartbeat.progress(range(5), total=5, desc="quick")) == list(range(5))
        assert stream.getvalue() == ""  # under 30 s: no line, not even the last
        clock = iter(range(0, 1000, 20))
        monkeypatch.setattr(heartbeat.time, "monotonic", lambda: next(clock))
        assert list(heartbeat.progress(range(6), total=6, desc="slow", unit="replicate")) == list(range(6))
        lines = stream.getvalue().splitlines()
        assert lines and all(line.startswith("slow: replicate ") and "ETA" in line for line in lines)
        assert lines[-1].startswith("slow: replicate 6/6 (100%)")
        heartbeat.phase("computing prdc")
        assert stream.getvalue().splitlines()[-1].endswith("] computing prdc")
    finally:
        heartbeat.set_log_lines(False)
    before = stream.getvalue()
    heartbeat.phase("not shown")
    assert list(heartbeat.progress(range(3), total=3, desc="off")) == [0, 1, 2] and stream.getvalue() == before


@pytest.mark.parametrize("quiet", [False, True])
def test_eval_samples_without_a_terminal_names_each_phase(tmp_path, capsys, quiet):
    from harness.cli import main

    args = ["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--feature-extractor", "identity",
            "--num-samples", "80", "--metrics", "fid,prdc", "--json", str(tmp_path / "r.json")]
    assert main([*args, "--quiet"] if quiet else args) == 0
    err = capsys.readouterr().err
    if quiet:
        assert "computing" not in err
    else:
        for phase in ("through identity", "computing fid", "computing prdc", "half-sample replicates"):
            assert phase in err, (phase, err)


def test_leaderboard_training_without_a_terminal_prints_heartbeat_lines(tmp_path, capsys):
    from harness.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text("""
name: beat
title: beat
dataset: {train: moons-train, eval: moons-test}
seeds: [0]
defaults:
  train: {steps: 40, batch_size: 64, num_train: 500}
  eval: {metrics: [fid], num_samples: 100, feature_extractor: identity, replicates: 0}
columns: [fid]
rows:
  - {id: fm, model: fm-ot, model_args: {hidden: 16, depth: 1, time_dim: 8}}
""")
    assert main(["leaderboard", "--suite", str(suite), "--results", str(tmp_path / "r"), "--out", str(tmp_path / "lb"),
                 "--work-dir", str(tmp_path / "w")]) == 0
    err = capsys.readouterr().err
    assert "train fm-ot: step 40/40 (100%)" in err and "computing fid" in err and "beat/fm seed 0" in err


def test_a_long_k_nn_pass_prints_progress_lines(monkeypatch, capsys):
    """The k-NN passes of precision/recall/density/coverage take minutes at 50,000 rows: in a log
    they print a line every 30 s (here the clock advances 40 s per reading)."""
    import numpy as np

    from metrics.knn import knn_radii_multi

    clock = iter(range(0, 100_000, 40))
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: next(clock))
    heartbeat.set_log_lines(True)
    try:
        knn_radii_multi(np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32), (3,), chunk_size=64)
    finally:
        heartbeat.set_log_lines(False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("k-NN lists 300 x 300")]
    assert lines and lines[-1].startswith("k-NN lists 300 x 300: tile 15/15 (100%)"), lines
