"""Progress with an ETA on stderr: a redrawn bar on a terminal, a plain line every 10% otherwise; and the
same progress as events (`QuantizeEvents`, for `--events jsonl`: see planner/events.py)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from planner.core.plan import SchemePlan
    from planner.events import EventSink


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left if the rest goes at the pace so far; None before anything is done."""
    if done <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


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
        return eta_seconds(self.done, self.total, self.clock() - self.t0)

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


class QuantizeEvents:
    """Turns llama-quantize's output, fed line by line (`run_quantize(on_line=...)`), into `tensor` and
    `progress` events: one of each per tensor llama-quantize reports, progress in source bytes read as
    `Progress` measures it."""

    def __init__(self, sink: "EventSink", plan: "SchemePlan", clock=time.monotonic) -> None:
        from planner.core.ggml.tensor_types import parse_type, tensor_bytes
        from planner.engines.llamacpp.logs import QuantizeLineParser
        from planner.errors import PlannerError

        def src_bytes(t) -> int:
            try:
                return tensor_bytes(tuple(t.shape), parse_type(t.src_type))
            except (PlannerError, ValueError):
                return 0

        self.sink = sink
        self.parser = QuantizeLineParser()
        self.src_bytes = {t.name: src_bytes(t) for t in plan.tensors}
        self.total = sum(self.src_bytes.values())
        self.done = 0
        self.clock = clock
        self.t0 = clock()

    def feed(self, line: str) -> None:
        from planner.core.ggml.tensor_types import parse_type, tensor_bytes
        from planner.errors import PlannerError

        t = self.parser.feed(line)
        if t is None:
            return
        shape = list(t.ne)
        while len(shape) > 1 and shape[-1] == 1:
            shape.pop()
        try:
            nbytes: int | None = tensor_bytes(tuple(shape), parse_type(t.type))
        except (PlannerError, ValueError):
            nbytes = None
        self.sink.emit("tensor", name=t.name, type=t.type, shape=shape, bytes=nbytes)
        self.done += self.src_bytes.get(t.name, 0)
        elapsed = self.clock() - self.t0
        eta = eta_seconds(self.done, self.total, elapsed)
        self.sink.emit("progress", tensor=t.index, tensors=t.total, name=t.name, bytes_done=self.done,
                       bytes_total=self.total, elapsed_s=round(elapsed, 3),
                       eta_s=None if eta is None else round(eta, 3))


def quantize_hooks(sink: "EventSink", plan: "SchemePlan") -> dict:
    """run_quantize's keyword arguments that report the run as events (none for a NullSink): `started`
    when llama-quantize starts, `tensor` and `progress` per tensor."""
    if not sink.enabled:
        return {}
    lines = QuantizeEvents(sink, plan)

    def started(child) -> None:
        sink.emit("started", program="llama-quantize", argv=list(child.argv), pid=child.pid)

    return {"on_line": lines.feed, "on_start": started}


def emit_verified(sink: "EventSink", n_tensors: int, mismatches) -> None:
    """The `verified` event of a check against the plan (quantize.Mismatch items)."""
    sink.emit("verified", ok=not mismatches, tensors=n_tensors, differences=len(mismatches),
              mismatches=[{"name": m.name, "what": m.what, "planned": m.predicted, "actual": m.actual}
                          for m in mismatches])
