"""The Run tab: quantization (progress, ETA, log, cancel) and a server (log, predicted vs measured).

Both run `dq-planner quantize` / `dq-planner serve` as child processes read by async workers, so the
screen never waits on them.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from planner.core.plan import MemoryPlan
from planner.render.units import human
from planner.tui.jobs import (ChildProcess, Measured, command_text, parse_buffer_line, parse_listening,
                              parse_quantize_progress)


class JobPanel(Vertical):
    """One job at a time: its status line and its log."""

    def __init__(self, kind: str, title: str, **kw) -> None:
        super().__init__(**kw)
        self.kind = kind
        self.title = title
        self.child: ChildProcess | None = None
        self.last_status = "idle"

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    def set_status(self, text: str, style: str = "") -> None:
        self.last_status = text
        t = Text(f"{self.title}: ", style="bold")
        t.append(text, style=style)
        self.query_one(f"#{self.kind}-status", Static).update(t)

    @property
    def log_widget(self) -> RichLog:
        return self.query_one(f"#{self.kind}-log", RichLog)

    async def stop(self) -> None:
        if self.child is not None and self.child.running:
            self.set_status("stopping...", "italic")
            await self.child.stop()

    def kill_now(self) -> None:
        if self.child is not None:
            self.child.kill_now()

    async def run_child(self, argv: list[str]) -> int | None:
        """Run argv to its end, feeding every line to on_line(); returns its exit code."""
        self.child = child = ChildProcess(argv)
        getattr(self.app, "child_processes", []).append(child)
        self.log_widget.write(Text("$ " + command_text(argv), style="bold"))
        try:
            await child.start()
        except OSError as e:
            self.set_status(f"could not start: {e}", "bold red")
            return None
        self.app.refresh_bindings()
        try:
            async for line, final in child.lines():
                self.on_line(line, final)
        finally:
            if child.running:
                await child.stop()
        rc = child.returncode
        self.app.refresh_bindings()
        return rc

    def on_line(self, line: str, final: bool) -> None:
        if final and line.strip():
            self.log_widget.write(Text(line))


class QuantizePanel(JobPanel):
    def __init__(self, **kw) -> None:
        super().__init__("quantize", "Quantize", **kw)
        self.weights: dict[str, int] = {}
        self.total_weight = 0
        self.done_weight = 0
        self.started = 0.0
        self.progress: tuple[int, int] = (0, 0)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="job-head"):
            yield Static(Text("Quantize: idle (press u to start)"), id="quantize-status")
            yield ProgressBar(id="quantize-progress", show_eta=False)
        yield RichLog(id="quantize-log", wrap=False, max_lines=2000)

    def begin(self, tensor_weights: dict[str, int]) -> None:
        """tensor_weights: the plan's elements per tensor name, so the bar moves as the work does."""
        self.weights = tensor_weights
        self.total_weight = sum(tensor_weights.values())
        self.done_weight = 0
        self.started = time.monotonic()
        self.progress = (0, 0)
        self.query_one("#quantize-progress", ProgressBar).update(total=100, progress=0)
        self.log_widget.clear()
        self.set_status("starting...")

    def on_line(self, line: str, final: bool) -> None:
        super().on_line(line, final)
        p = parse_quantize_progress(line)
        if p is None:
            return
        self.progress = (p.done, p.total)
        w = self.weights.get(p.tensor)
        if w is not None and self.total_weight:
            self.done_weight += w
            frac = self.done_weight / self.total_weight
        else:
            frac = p.done / p.total if p.total else 0.0
        frac = min(frac, 1.0)
        self.query_one("#quantize-progress", ProgressBar).update(progress=100 * frac)
        elapsed = time.monotonic() - self.started
        eta = ""
        if 0 < frac < 1:
            rest = elapsed * (1 - frac) / frac
            eta = f", ETA {int(rest // 60)}:{int(rest % 60):02d}"
        self.set_status(f"{p.done}/{p.total} tensors{eta}")

    def finish(self, rc: int | None, output: str) -> None:
        if self.child is not None and self.child.cancelled:
            self.set_status(f"cancelled (exit {rc})", "bold yellow")
        elif rc == 0:
            self.query_one("#quantize-progress", ProgressBar).update(progress=100)
            self.set_status(f"done: {output}", "bold green")
        else:
            self.set_status(f"failed (exit {rc}); see the log", "bold red")


class ServePanel(JobPanel):
    def __init__(self, **kw) -> None:
        super().__init__("serve", "Server", **kw)
        self.measured = Measured()
        self.predicted: MemoryPlan | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Server: idle (press r to start)"), id="serve-status")
        yield DataTable(id="serve-compare", cursor_type="none")
        yield RichLog(id="serve-log", wrap=False, max_lines=5000)

    def on_mount(self) -> None:
        t = self.query_one("#serve-compare", DataTable)
        for c in ("device", "weights plan", "measured", "KV plan", "measured ", "compute plan", "measured  "):
            t.add_column(c)

    def begin(self, predicted: MemoryPlan | None) -> None:
        self.predicted = predicted
        self.measured = Measured()
        self.log_widget.clear()
        self.set_status("starting...")
        self.update_table()

    def on_line(self, line: str, final: bool) -> None:
        super().on_line(line, final)
        b = parse_buffer_line(line)
        if b is not None:
            self.measured.add(b)
            self.update_table()
            return
        url = parse_listening(line)
        if url:
            self.set_status(f"listening on {url} (K to stop)", "bold green")

    def update_table(self) -> None:
        t = self.query_one("#serve-compare", DataTable)
        t.clear()
        pred = {}
        if self.predicted is not None:
            pred = {d.device: d for d in self.predicted.per_device}
            if self.predicted.host is not None:
                pred[self.predicted.host.device] = self.predicted.host
        names = list(pred) + [n for n in self.measured.by_device if n not in pred]

        def cell(v: int | None) -> Text:
            return Text(human(v) if v is not None else "-", justify="right")

        for n in names:
            p = pred.get(n)
            m = self.measured.by_device.get(n, {})
            t.add_row(n, cell(p.weights_bytes if p else None), cell(m.get("model")),
                      cell(p.kv_bytes if p else None), cell(m.get("KV")),
                      cell(p.compute_bytes if p else None), cell(m.get("compute")))

    def finish(self, rc: int | None) -> None:
        if self.child is not None and self.child.cancelled:
            self.set_status(f"stopped (exit {rc})", "bold yellow")
        elif rc == 0:
            self.set_status("exited (0)")
        else:
            self.set_status(f"failed (exit {rc}); see the log", "bold red")


class RunView(Vertical):
    def compose(self) -> ComposeResult:
        yield QuantizePanel(id="quantize-panel")
        yield ServePanel(id="serve-panel")
