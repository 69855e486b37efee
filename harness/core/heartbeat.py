"""Progress lines for logs: when stderr is not a terminal, long loops print a line at a bounded interval.

A progress bar needs a terminal; in a CI log or a batch job it prints nothing until the end (a
RealNVP recipe trained 20 minutes silently). :class:`Heartbeat` writes one line, e.g.
``train realnvp: step 1200/2400 (50%), 4.1 steps/s, ETA 4 min 52 s, loss=1.73``, whenever
``every_s`` seconds have passed since the last line or another ``every_fraction`` of the work is
done, and once at the end.

The command line decides once (:func:`set_log_lines`: stderr is not a terminal and ``--quiet`` was
not given); loops then call :func:`progress` (a bar on a terminal, progress lines in a log, nothing
otherwise) and phases :func:`phase`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
_LOG_LINES = {"enabled": False, "t0": time.monotonic()}


def set_log_lines(enabled: bool) -> None:
    """Whether :func:`progress` and :func:`phase` print lines (the CLI: stderr is not a TTY, no --quiet)."""
    _LOG_LINES.update(enabled=bool(enabled), t0=time.monotonic())


def log_lines() -> bool:
    return bool(_LOG_LINES["enabled"])


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Heartbeat:
    """Prints ``label: unit done/total (pct), rate, ETA[, extra]`` at most every ``every_s`` seconds or
    every ``every_fraction`` of ``total``, and at the end; silent when ``enabled`` is False."""

    def __init__(self, label: str, total: int, *, unit: str = "step", every_s: float = 30.0,
                 every_fraction: float = 0.1, start: int = 0, enabled: bool = True, stream: TextIO | None = None,
                 clock=time.monotonic, end_line: bool = True) -> None:
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.every_s, self.every_fraction, self.enabled = every_s, every_fraction, enabled
        self.stream = stream
        self.clock = clock
        self.t0 = self.last_t = clock()
        self.start = self.last_done = start
        self.end_line, self.printed = end_line, False

    def update(self, done: int, extra: str = "") -> None:
        """Record that ``done`` units are complete; print a line if one is due."""
        if not self.enabled:
            return
        now = self.clock()
        step = max(1, int(self.every_fraction * self.total))
        due = (now - self.last_t >= self.every_s or done // step > self.last_done // step or done >= self.total)
        if not due or done == self.last_done:
            return
        if done >= self.total and not self.end_line and not self.printed and now - self.last_t < self.every_s:
            return  # a short loop ends silently when asked to
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        line = (f"{self.label}: {self.unit} {done}/{self.total} ({100 * done / self.total:.0f}%), "
                f"{rate:.3g} {self.unit}s/s, ETA {_duration(eta) if eta != float('inf') else '?'}")
        print(line + (f", {extra}" if extra else ""), file=self.stream or sys.stderr, flush=True)
        self.last_t, self.last_done, self.printed = now, done, True


def progress(iterable: Iterable[T], *, total: int, desc: str, unit: str = "batch", bar: bool = False) -> Iterator[T]:
    """``iterable`` with a tqdm bar (``bar``), else with a :class:`Heartbeat` line every 30 s when
    :func:`log_lines` (and one at the end if any was printed), else as it is."""
    if bar:
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
        return
    if not log_lines():
        yield from iterable
        return
    beat = Heartbeat(desc, total, unit=unit, every_fraction=1.0, end_line=False, clock=lambda: time.monotonic())
    for i, item in enumerate(iterable, 1):
        yield item
        beat.update(i)


def phase(message: str, stream: TextIO | None = None) -> None:
    """One line ``[<elapsed> since the command started] message`` when :func:`log_lines`."""
    if log_lines():
        elapsed = _duration(time.monotonic() - float(_LOG_LINES["t0"]))
        print(f"[{elapsed}] {message}", file=stream or sys.stderr, flush=True)
