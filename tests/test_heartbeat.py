"""Progress lines when stderr is not a terminal."""

from __future__ import annotations

import io

from harness.core.heartbeat import Heartbeat


def test_heartbeat_prints_every_tenth_and_after_every_interval_with_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    beat = Heartbeat("train x", 100, every_s=30, stream=out, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] += 0.1  # 10 steps/s
        beat.update(step, "loss=1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("train x: step 10/100 (10%), 10 steps/s, ETA 9 s, loss=1")
    assert lines[-1].startswith("train x: step 100/100 (100%)")
    slow, out = [0.0], io.StringIO()
    beat = Heartbeat("eval", 10_000, every_s=30, stream=out, clock=lambda: slow[0])
    for step in range(1, 50):
        slow[0] += 1.0  # 1 step/s: a line every 30 s although 10% is 1,000 steps away
        beat.update(step)
    assert out.getvalue().splitlines()[0].startswith("eval: step 30/10000 (0%), 1 steps/s, ETA 2 h 46 min")
    quiet = io.StringIO()
    Heartbeat("q", 10, enabled=False, stream=quiet).update(10)
    assert quiet.getvalue() == ""


def test_train_without_a_terminal_prints_progress_lines(tmp_path, capsys):
    from harness.cli import main

    assert main(["train", "rectified-flow", "--dataset", "moons-train", "--steps", "20", "--num-train", "256",
                 "--out", str(tmp_path / "m.pt"), "--model-arg", "hidden=16", "--model-arg", "depth=2"]) == 0
    err = capsys.readouterr().err  # capsys is not a terminal
    lines = [line for line in err.splitlines() if line.startswith("train rectified-flow: step")]
    assert len(lines) == 10 and "ETA" in lines[0] and "loss" in lines[0] and "20/20 (100%)" in lines[-1]
