"""Progress lines for logs: when stderr is not a terminal, long loops print a line at a bounded interval.

A progress bar needs a terminal; in a CI log or a batch job it prints nothing until the end (a
RealNVP recipe trained 20 minutes silently). :class:`Heartbeat` writes one line, e.g.
``train realnvp: step 1200/2400 (50%), 4.1 steps/s, ETA 4 min 52 s, loss=1.73``, whenever
``every_s`` seconds have passed since the last line or another ``every_fraction`` of the work is
done, and once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
                 clock=time.monotonic) -> None:
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.every_s, self.every_fraction, self.enabled = every_s, every_fraction, enabled
        self.stream = stream
        self.clock = clock
        self.t0 = self.last_t = clock()
        self.start = self.last_done = start

    def update(self, done: int, extra: str = "") -> None:
        """Record that ``done`` units are complete; print a line if one is due."""
        if not self.enabled:
            return
        now = self.clock()
        step = max(1, int(self.every_fraction * self.total))
        due = (now - self.last_t >= self.every_s or done // step > self.last_done // step or done >= self.total)
        if not due or done == self.last_done:
            return
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        line = (f"{self.label}: {self.unit} {done}/{self.total} ({100 * done / self.total:.0f}%), "
                f"{rate:.3g} {self.unit}s/s, ETA {_duration(eta) if eta != float('inf') else '?'}")
        print(line + (f", {extra}" if extra else ""), file=self.stream or sys.stderr, flush=True)
        self.last_t, self.last_done = now, done
