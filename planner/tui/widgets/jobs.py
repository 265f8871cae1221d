"""The Run tab: quantization (progress, ETA, log, cancel) and a server (log, planned vs measured).

Both run `dq-planner quantize` / `dq-planner serve` as child processes read by async workers, so the
screen never waits on them; the figures shown are the ones those commands print.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from planner.tui.jobs import (ChildProcess, ComparisonRow, clean, command_text, parse_comparison_row,
                              parse_quantize_progress, parse_ready)


class JobPanel(Vertical):
    """One job at a time: its status line and its log."""

    use_pty = False

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
        self.child = child = ChildProcess(argv, use_pty=self.use_pty)
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
                self.on_line(clean(line), final)
        finally:
            if child.running:
                await child.stop()
        self.app.refresh_bindings()
        return child.returncode

    def on_line(self, line: str, final: bool) -> None:
        if final and line.strip():
            self.log_widget.write(Text(line))


class QuantizePanel(JobPanel):
    use_pty = True          # dq-planner quantize redraws its progress after every tensor on a terminal

    def __init__(self, **kw) -> None:
        super().__init__("quantize", "Quantize", **kw)
        self.fraction = 0.0
        self.output = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="job-head"):
            yield Static(Text("Quantize: idle (u starts one)"), id="quantize-status")
            yield ProgressBar(id="quantize-progress", total=100, show_eta=False, show_percentage=False)
        yield RichLog(id="quantize-log", wrap=False, max_lines=2000)

    def begin(self, output: str) -> None:
        self.fraction = 0.0
        self.output = output
        self.query_one("#quantize-progress", ProgressBar).update(total=100, progress=0)
        self.log_widget.clear()
        self.set_status("starting...")

    def on_line(self, line: str, final: bool) -> None:
        p = parse_quantize_progress(line)
        if p is None:
            super().on_line(line, final)
            return
        self.fraction = p.fraction
        self.query_one("#quantize-progress", ProgressBar).update(progress=100 * p.fraction)
        eta = f", ETA {p.eta}" if p.eta and p.fraction < 1 else ""
        self.set_status(f"{100 * p.fraction:.0f}%{eta} {p.label} (K cancels)")

    def finish(self, rc: int | None) -> None:
        if self.child is not None and self.child.cancelled:
            self.set_status(f"cancelled (exit {rc}); no partial output is kept", "bold yellow")
        elif rc == 0:
            self.query_one("#quantize-progress", ProgressBar).update(progress=100)
            self.set_status(f"done: {self.output}, verified against the plan", "bold green")
        else:
            self.set_status(f"failed (exit {rc}); see the log", "bold red")


class ServePanel(JobPanel):
    def __init__(self, **kw) -> None:
        super().__init__("serve", "Server", **kw)
        self.rows: list[ComparisonRow] = []
        self.url: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Server: idle (r starts one)"), id="serve-status")
        yield DataTable(id="serve-compare", cursor_type="none")
        yield RichLog(id="serve-log", wrap=False, max_lines=5000)

    def on_mount(self) -> None:
        t = self.query_one("#serve-compare", DataTable)
        t.add_columns("device", "what", "planned MiB", "measured MiB", "planned - measured")

    def begin(self) -> None:
        self.rows = []
        self.url = None
        self.log_widget.clear()
        self.set_status("starting...")
        self.update_table()

    def on_line(self, line: str, final: bool) -> None:
        super().on_line(line, final)
        if line.startswith("device") and "planned MiB" in line:
            self.rows = []                  # a new comparison table follows
            return
        row = parse_comparison_row(line)
        if row is not None:
            self.rows.append(row)
            self.update_table()
            return
        url = parse_ready(line)
        if url:
            self.url = url
            self.set_status(f"ready on {url} (K stops it)", "bold green")

    def update_table(self) -> None:
        t = self.query_one("#serve-compare", DataTable)
        t.clear()

        def num(v: float | None) -> Text:
            return Text("-" if v is None else f"{v:.2f}", justify="right")

        for r in self.rows:
            t.add_row(r.device, r.what, num(r.planned_mib), num(r.measured_mib), r.diff)

    def finish(self, rc: int | None) -> None:
        if self.child is not None and self.child.cancelled:
            self.set_status(f"stopped (exit {rc})", "bold yellow")
        elif rc == 0:
            self.set_status("stopped (exit 0)")
        else:
            self.set_status(f"failed (exit {rc}); see the log", "bold red")


class RunView(Vertical):
    def compose(self) -> ComposeResult:
        yield QuantizePanel(id="quantize-panel")
        yield ServePanel(id="serve-panel")
