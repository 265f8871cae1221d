"""Progress with an ETA on stderr: a redrawn bar on a terminal, a plain line every 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_time(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """`update(done, label)` with `done` in the same unit as `total` (bytes of source tensors here:
    quantizing time grows with the elements read, so the ETA follows the work, not the tensor count)."""

    def __init__(self, total: float, what: str = "", stream: TextIO | None = None, tty: bool | None = None,
                 width: int = 30, clock=time.monotonic):
        self.total = max(float(total), 1.0)
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.clock = clock
        self.t0 = clock()
        self.done = 0.0
        self._next_pct = 10
        self._last_len = 0
        self.count = 0

    def eta(self) -> float | None:
        if self.done <= 0:
            return None
        elapsed = self.clock() - self.t0
        return elapsed * (self.total - self.done) / self.done

    def line(self, label: str = "") -> str:
        frac = min(1.0, self.done / self.total)
        eta = self.eta()
        eta_s = "--:--" if eta is None else _fmt_time(eta)
        elapsed = _fmt_time(self.clock() - self.t0)
        if self.tty:
            n = int(frac * self.width)
            bar = "#" * n + "-" * (self.width - n)
            return f"{self.what} [{bar}] {frac * 100:5.1f}% {elapsed} ETA {eta_s} {label}".rstrip()
        return f"{self.what} {frac * 100:3.0f}% ({self.count} tensors, {elapsed} elapsed, ETA {eta_s})".strip()

    def update(self, done: float, label: str = "") -> None:
        self.done = done
        self.count += 1
        if self.tty:
            text = self.line(label)
            pad = max(0, self._last_len - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._last_len = len(text)
            self.stream.flush()
        else:
            pct = 100.0 * self.done / self.total
            if pct >= self._next_pct:
                while self._next_pct <= pct:
                    self._next_pct += 10
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0
