"""The Run tab: quantization (progress, ETA, log, cancel) and a server (log, planned vs measured).

Both run `dq-planner quantize` / `dq-planner serve --events jsonl` as child processes read by async
workers, so the screen never waits on them; the figures shown are those of the commands' events
(planner/events.py), applied to a QuantizeState / ServeState (planner/tui/jobs.py); their other lines are
the log.
"""

from __future__ import annotations

import sys

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from planner.tui.jobs import (ChildProcess, ComparisonRow, JobState, QuantizeState, ServeState, clean,
                              command_text, events_argv)


class JobPanel(Vertical):
    """One job at a time: its status line and its log."""

    use_pty = False

    def __init__(self, kind: str, title: str, **kw) -> None:
        super().__init__(**kw)
        self.kind = kind
        self.title = title
        self.child: ChildProcess | None = None
        self.last_status = "idle"
        self.state: JobState = self.new_state()

    def new_state(self) -> JobState:
        return JobState()

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
        """Run argv (a dq-planner subcommand: `--events jsonl` is added) to its end: events update the
        state (show_state), other lines go to the log (on_line); returns its exit code."""
        if argv[:3] == [sys.executable, "-m", "planner.cli"]:
            argv = [*argv[:3], *events_argv(argv[3:])]
        self.state = self.new_state()
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
                line = clean(line)
                if self.state.feed_line(line):
                    self.show_state()
                else:
                    self.on_line(line, final)
        finally:
            if child.running:
                await child.stop()
        self.app.refresh_bindings()
        return child.returncode

    def on_line(self, line: str, final: bool) -> None:
        if final and line.strip():
            self.log_widget.write(Text(line))

    def show_state(self) -> None:
        """The state has changed: show it."""


class QuantizePanel(JobPanel):
    state: QuantizeState

    def __init__(self, **kw) -> None:
        super().__init__("quantize", "Quantize", **kw)
        self.output = ""

    def new_state(self) -> QuantizeState:
        return QuantizeState()

    @property
    def fraction(self) -> float:
        return self.state.fraction

    def compose(self) -> ComposeResult:
        with Horizontal(classes="job-head"):
            yield Static(Text("Quantize: idle (u starts one)"), id="quantize-status")
            yield ProgressBar(id="quantize-progress", total=100, show_eta=False, show_percentage=False)
        yield RichLog(id="quantize-log", wrap=False, max_lines=2000)

    def begin(self, output: str) -> None:
        self.state = self.new_state()
        self.output = output
        self.query_one("#quantize-progress", ProgressBar).update(total=100, progress=0)
        self.log_widget.clear()
        self.set_status("starting...")

    def show_state(self) -> None:
        st = self.state
        self.query_one("#quantize-progress", ProgressBar).update(progress=100 * st.fraction)
        if st.verified is False:
            self.set_status(f"{st.differences} difference(s) from the plan; see the log", "bold red")
        elif st.verified is None and st.exit_code is None and st.tensors:
            self.set_status(f"{st.progress_text()} (K cancels)")

    def finish(self, rc: int | None) -> None:
        st = self.state
        if self.child is not None and self.child.cancelled:
            self.set_status(f"cancelled (exit {rc}); no partial output is kept", "bold yellow")
        elif rc == 0 and st.verified:
            self.query_one("#quantize-progress", ProgressBar).update(progress=100)
            self.set_status(f"done: {st.output or self.output}, {st.tensors} tensors verified against the plan",
                            "bold green")
        else:
            why = st.error or "see the log"
            self.set_status(f"failed (exit {rc}): {why}", "bold red")


class ServePanel(JobPanel):
    state: ServeState

    def __init__(self, **kw) -> None:
        super().__init__("serve", "Server", **kw)

    def new_state(self) -> ServeState:
        return ServeState()

    @property
    def rows(self) -> list[ComparisonRow]:
        return self.state.rows

    @property
    def url(self) -> str | None:
        return self.state.url

    def compose(self) -> ComposeResult:
        yield Static(Text("Server: idle (r starts one)"), id="serve-status")
        yield DataTable(id="serve-compare", cursor_type="none")
        yield RichLog(id="serve-log", wrap=False, max_lines=5000)

    def on_mount(self) -> None:
        t = self.query_one("#serve-compare", DataTable)
        t.add_columns("device", "what", "planned MiB", "measured MiB", "planned - measured")

    def begin(self) -> None:
        self.state = self.new_state()
        self.log_widget.clear()
        self.set_status("starting...")
        self.update_table()

    def show_state(self) -> None:
        st = self.state
        self.update_table()
        if st.exit_code is None and st.url and st.phase != "stopped":
            self.set_status(f"ready on {st.url} (K stops it)", "bold green")
        elif st.exit_code is None and st.pid is not None and not st.url:
            self.set_status(f"loading the model (llama-server pid {st.pid})...")

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
            why = self.state.error or "see the log"
            self.set_status(f"failed (exit {rc}): {why}", "bold red")


class RunView(Vertical):
    def compose(self) -> ComposeResult:
        yield QuantizePanel(id="quantize-panel")
        yield ServePanel(id="serve-panel")
