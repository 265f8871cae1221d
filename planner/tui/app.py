"""dq-planner's terminal workbench: choose, see the plan, then export, quantize or serve.

The app renders a planner.workbench.Workbench (the request, the selection, the plans) and turns keys
and edits into its methods; it decides nothing itself. The selected scheme is planned at once (a few
milliseconds for the 671B model); the plan of every scheme (the comparison, the accuracy table, the
plots and the recommendation) is made in a separate planning process (planner/tui/background.py) and
handed to the workbench when it arrives. A change redraws one line-API widget for the plan and moves
marks elsewhere; tabs that are not shown are drawn when they are opened (bench/bench_tui.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Iterable

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Input, Select, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from planner.core.plan import PlanRequest
from planner.errors import PlannerError
from planner.tui import background
from planner.tui.choices import AUTO_DEVICE, write_new_file
from planner.tui.keys import ACTIONS, SHOWN_KEYS
from planner.tui.runs import RunActions
from planner.tui.screens.dialogs import Field, FormDialog
from planner.tui.screens.palette import ChoiceCommands
from planner.tui.widgets.choices import MODEL, SCHEME, ChoicesPanel
from planner.tui.widgets.footer import KeyFooter
from planner.tui.widgets.jobs import RunView
from planner.tui.widgets.plan_view import PlanView
from planner.tui.widgets.plots import AccuracyMemoryPlot, ComponentPlot, PlotsView
from planner.tui.widgets.speed_plot import SpeedDepthPlot
from planner.tui.widgets.serving import ServingView
from planner.tui.widgets.schemes import AccuracyView, SchemesView
from planner.tui.widgets.tensors import TensorView
from planner.workbench import FILE, Workbench

__all__ = ["ACTIONS", "PlannerApp", "run_tui"]


def assets_dir() -> Path:
    """assets/ beside the package (a checkout or an editable install), else the installed data folder."""
    env = os.environ.get("DQ_PLANNER_ASSETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "assets"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "dq-planner" / "assets"


class PlannerApp(RunActions, App[int]):
    TITLE = "dq-planner"
    CSS_PATH = [assets_dir() / "tui.tcss"]
    COMMANDS = App.COMMANDS | {ChoiceCommands}
    AUTO_FOCUS = "#plan-scroll"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        *[Binding(k, a, label, show=show, tooltip=title) for k, a, label, title, show in ACTIONS],
    ]

    def __init__(self, request: PlanRequest | None = None, *, full_plan_delay: float = 0.25) -> None:
        super().__init__()
        self.wb = Workbench(request)
        self.full_plan_delay = full_plan_delay
        self.last_replan_s = 0.0
        self._full_timer = None
        self._dirty: set[str] = {"tensors", "plots", "plot-accuracy"}    # tabs drawn when next shown
        self._auto_labelled = False
        self._last_quant_output = ""
        self.child_processes: list = []       # every child started, so that none outlives the app

    # the workbench's state, for tests and scripts
    request = property(lambda self: self.wb.request)
    scheme_id = property(lambda self: self.wb.scheme_id)
    error = property(lambda self: self.wb.error)
    full_plan = property(lambda self: self.wb.full_plan)
    scheme_choices = property(lambda self: self.wb.choices())
    plan = property(lambda self: self.wb.selected.plan if self.wb.selected else None)
    sp = property(lambda self: self.wb.selected.scheme if self.wb.selected else None)

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Static("≡ dq-planner", id="title")
        with Horizontal(id="body"):
            yield ChoicesPanel(self.wb.request, self.wb.choices(), self.wb.scheme_id, handler=self.on_choice,
                               id="choices")
            with Vertical(id="main"):
                yield Static("", id="error")
                with TabbedContent(id="tabs", initial="plan"):
                    with TabPane("Plan", id="plan"):
                        yield PlanView(id="plan-scroll")
                    with TabPane("Schemes", id="schemes"):
                        yield SchemesView(id="schemes-view")
                    with TabPane("Accuracy", id="accuracy"):
                        yield AccuracyView(id="accuracy-view")
                    with TabPane("Tensors", id="tensors"):
                        yield TensorView(id="tensor-view")
                    with TabPane("Plots", id="plots"):
                        yield PlotsView(id="plots-view")
                    with TabPane("Serving", id="serving"):
                        yield ServingView(handler=self.on_choice, id="serving-view")
                    with TabPane("Run", id="run"):
                        yield RunView(id="run-view")
        yield KeyFooter()

    def on_mount(self) -> None:
        background.WORKER.start()               # the planning process starts while the screen is built
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            loop.add_signal_handler(signal.SIGHUP, self._hangup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        self.changed(self.wb.refresh)
        self.set_focus(self.query_one("#plan-scroll"))

    # ---------------------------------------------------------------- workbench -> screen
    def changed(self, step, *args, **kw) -> None:
        """Run a workbench step, then show what it changed."""
        t0 = perf_counter()
        step(*args, **kw)
        with self.batch_update():
            self.render_selected()
        self.last_replan_s = perf_counter() - t0
        self.schedule_full_plan()

    def show_error(self, message: str | None) -> None:
        err = self.query_one("#error", Static)
        if getattr(err, "_shown", None) == message:
            return
        err._shown = message
        err.update(Text("! " + message) if message else "")
        err.set_class(bool(message), "visible")
        self.query_one("#tabs").set_class(bool(message), "stale")

    def hardware_fallback(self) -> str:
        r = self.wb.request
        return f"{r.nodes} node(s) x {r.gpus or 'profile'}'s x {r.device or 'detected (else h100)'}"

    def render_selected(self) -> None:
        wb = self.wb
        self.show_error(wb.error)
        choices = self.query_one(ChoicesPanel)
        choices.set_schemes(wb.choices(), wb.scheme_id)
        sel = wb.selected
        view = self.query_one(PlanView)
        if sel is None:
            if wb.is_auto:
                view.show_message(Text("Comparing every model with measured accuracy on this hardware...",
                                       style="italic"))
            return
        plan, sp = sel.plan, sel.scheme
        hw = plan.hardware
        where = (f"{hw.nodes}x" if hw and hw.nodes > 1 else "") + (f"{hw.gpus}x{hw.device}" if hw else "auto")
        title = " · ".join(x for x in (plan.model.id, sp.id, where, f"ctx {plan.context}", plan.kv_mode or "") if x)
        self.query_one("#title", Static).update(f"≡ dq-planner — {title}", layout=False)
        view.show(plan, sp, wb.recommendation(), wb.full_pending, self.hardware_fallback())
        choices.show(wb.request, plan)
        if wb.request.device in (None, AUTO_DEVICE) and not self._auto_labelled:
            self._label_detected(choices)
        self.query_one(SchemesView).select(FILE if sp.kind == "file" else sp.id)
        self._dirty |= {"tensors", "plots", "serving"}
        self._draw_shown_tab()

    def _label_detected(self, choices: ChoicesPanel) -> None:
        """Name what detection found on the "auto" choice (once: the plan has used it)."""
        self._auto_labelled = True
        try:
            from planner.hardware.detect import detect_hardware, summary_line

            found = summary_line(detect_hardware())
        except Exception:          # detection is optional here: the plan itself says what it used
            return
        choices.label_auto_device("auto (none found)" if found.startswith("no ")
                                  else f"auto ({found.removeprefix('detected ')})")

    def _draw_shown_tab(self) -> None:
        tab = self.query_one("#tabs", TabbedContent).active
        if tab == "schemes":
            self.call_after_refresh(self.query_one(SchemesView).reveal)
        if tab == "tensors" and "tensors" in self._dirty:
            self._dirty.discard("tensors")
            self.query_one(TensorView).show(self.wb.with_tensors())
        elif tab == "serving" and "serving" in self._dirty:
            self._dirty.discard("serving")
            self.query_one(ServingView).show(self.wb.request, self.sp)
        elif tab == "plots":
            if "plots" in self._dirty:
                self._dirty.discard("plots")
                self.query_one(ComponentPlot).show(self.sp)
                self.query_one(SpeedDepthPlot).show(self.sp, self.plan.context if self.plan else 0)
            if "plot-accuracy" in self._dirty:
                self._dirty.discard("plot-accuracy")
                self.query_one(AccuracyMemoryPlot).show(self.wb.full_plan, self.wb.full_pending)
                self.query_one("#plot-note", Static).update(Text(
                    "Points: schemes with both memory and measured accuracy; vertical line: device capacity.",
                    style="dim"))

    def render_full(self) -> None:
        wb = self.wb
        with self.batch_update():
            self.query_one(SchemesView).show(wb.full_plan, wb.full_error, FILE if wb.scheme_id == FILE else
                                             (self.sp.id if self.sp else wb.scheme_id))
            self.query_one(AccuracyView).show(wb.full_plan, wb.full_pending)
            self._dirty.add("plot-accuracy")
            self.render_selected()

    # ---------------------------------------------------------------- the plan of every scheme
    def schedule_full_plan(self, now: bool = False) -> None:
        if not self.wb.full_pending:
            return
        if self._full_timer is not None:
            self._full_timer.stop()
        if self.full_plan_delay <= 0 or now or self.wb.is_auto:
            self._start_full_plan()
        else:
            self._full_timer = self.set_timer(self.full_plan_delay, self._start_full_plan)

    def _start_full_plan(self) -> None:
        self._full_timer = None
        req = self.wb.full_request()
        self.run_worker(partial(self._plan_all, req), exclusive=True, group="full-plan", name="full-plan",
                        exit_on_error=False)

    @staticmethod
    async def _plan_all(req: PlanRequest):
        """In the planning process (planner/tui/background.py): the screen never waits on it."""
        token = object()
        try:
            return await asyncio.to_thread(background.WORKER.plan, req, req.schemes, token)
        except asyncio.CancelledError:
            background.WORKER.cancel(token)      # superseded by newer choices: stop planning them
            raise

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if w.name != "full-plan" or self._exiting() or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            # not a bad choice (those come back as an error line): the planning process itself failed
            got = self.wb.receive_full(self.wb.full_request(), None, f"{type(w.error).__name__}: {w.error}")
        else:
            got = self.wb.receive_full(*w.result)
        try:
            if got:
                self.render_full()
        except NoMatches:
            pass            # the app closed while the answer was on its way: no screen to show it on

    def _exiting(self) -> bool:
        """The app is closing: an answer that arrives now has no screen to go to."""
        return self._closing or self._closed or self.screen._closing

    async def settle(self) -> None:
        """Plan every scheme now and wait for it (tests, benchmarks and scripted runs)."""
        from textual.worker import WorkerCancelled

        if self._full_timer is not None:
            self._full_timer.stop()
            self._start_full_plan()
        while True:
            running = [w for w in self.workers if w.group == "full-plan" and w.is_running]
            if not running:
                break
            try:
                await self.workers.wait_for_complete(running)
            except WorkerCancelled:
                pass

    def screen_text(self) -> str:
        """The current screen as plain text (what a terminal shows, without colours)."""
        from io import StringIO

        from rich.console import Console

        width, height = self.size
        console = Console(width=width, height=height, file=StringIO(), force_terminal=True, record=True,
                          legacy_windows=False, safe_box=False, color_system=None)
        console.print(self.screen._compositor.render_update(full=True, screen_stack=self._background_screens))
        return console.export_text()

    # ---------------------------------------------------------------- screen -> workbench
    def set_select(self, select_id: str, value: str) -> None:
        """Set a choice as the user would (the palette uses it)."""
        self.query_one(f"#{select_id}", Select).value = value

    def on_choice(self, event) -> None:
        """An edit in the choices panel, handed over at once (the frame that shows it shows the plan)."""
        if isinstance(event, ChoicesPanel.Changed):
            self.changed(self.wb.update, **event.changes)
        elif isinstance(event, ChoicesPanel.SchemeChosen):
            self.changed(self.wb.select, event.scheme_id)
        elif isinstance(event, ChoicesPanel.Invalid):
            self.wb.error = event.message
            self.show_error(event.message)
        elif isinstance(event, ChoicesPanel.Committed) and self.wb.error is None:
            self.focus_tab_content()          # (a value the plan refuses keeps the field, to be mended)

    @on(DataTable.RowSelected, "#scheme-table")
    def _scheme_row(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.changed(self.wb.select, event.row_key.value)

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        self._draw_shown_tab()

    # ---------------------------------------------------------------- actions
    def action_choose(self, what: str) -> None:
        self.query_one("#choices").display = True
        w = self.query_one(f"#ch-{what}")
        w.focus()
        if isinstance(w, Select) and not w.disabled:
            w.action_show_overlay()

    def action_step_scheme(self, step: int) -> None:
        self.changed(self.wb.step, step)

    def action_apply_recommendation(self) -> None:
        if self.wb.recommendation() is None:
            self.notify("No recommendation in this plan yet.", severity="warning")
            return
        self.changed(self.wb.apply_recommendation)

    _TAB_FOCUS = {"plan": "#plan-scroll", "schemes": "#scheme-table", "accuracy": "#accuracy-table",
                  "tensors": "#tensor-table", "plots": "#plots-view", "run": "#quantize-log",
                  "serving": "#sv-plot"}

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self._draw_shown_tab()
        self.focus_tab_content()

    def focus_tab_content(self) -> None:
        """The shown tab's content takes the keys (the arrows and page keys scroll it at once; digits
        switch tabs, never reach a field)."""
        target = self.query_one(self._TAB_FOCUS[self.query_one("#tabs", TabbedContent).active])
        if target.focusable:
            self.set_focus(target)

    def action_filter_tensors(self) -> None:
        self.action_show_tab("tensors")
        self.query_one("#tensor-filter", Input).focus()

    def action_leave_field(self) -> None:
        """Escape: a typed field gets its planned value back; the keys go to the shown tab."""
        panel = self.query_one(ChoicesPanel)
        if panel.is_field(self.focused):
            panel.revert(self.focused)
            if self.wb.error is not None:
                self.changed(self.wb.refresh)        # the error was the typed value's
        self.focus_tab_content()

    def action_show_keys(self) -> None:
        from planner.tui.screens.keys_help import KeysHelp

        keys = [("ctrl+q", "Quit")] + [(SHOWN_KEYS.get(k, k), title) for k, _, _, title, _ in ACTIONS]
        self.push_screen(KeysHelp(keys))

    def action_toggle_choices(self) -> None:
        ch = self.query_one("#choices")
        ch.display = not ch.display

    def _save(self, title: str, default: str, make_text, done_note: str, text: str = "", mode: int | None = None):
        def done(vals: dict[str, str] | None) -> None:
            if not vals:
                return
            try:
                p = write_new_file(vals["path"], make_text())
                if mode is not None:
                    p.chmod(mode)
            except PlannerError as e:
                self.notify(str(e), severity="error")
                return
            self.notify(f"{done_note} {os.path.abspath(p)}")

        self.push_screen(FormDialog(title, [Field("path", "save as" if text else "file", default)], "Save",
                                    text=text), done)

    def action_export_plan(self) -> None:
        wb = self.wb
        self._save("Export the plan (JSON, all schemes)", f"dq-plan-{wb.model_stem()}-{wb.scheme_arg()}.json",
                   lambda: json.dumps(wb.document(), indent=2) + "\n", "Plan written to")

    def launch_text(self) -> str:
        return self.wb.launch_script()

    def action_launch_commands(self) -> None:
        text = self.wb.launch_script()
        self._save("Launch commands", f"dq-launch-{self.wb.model_stem()}-{self.wb.scheme_arg()}.sh", lambda: text,
                   "Launch commands written to", text=text, mode=0o755)

    async def action_quit(self) -> None:
        await asyncio.gather(*(self._panel(k).stop() for k in ("quantize", "serve")))
        self.exit(0)

    def kill_children(self) -> None:
        for child in self.child_processes:
            child.kill_now()

    def _hangup(self) -> None:
        """The terminal is gone: nothing can be drawn or restored any more. Stop the children and leave."""
        self.kill_children()
        background.WORKER.shutdown()
        os._exit(128 + signal.SIGHUP)

    def on_unmount(self) -> None:
        self.kill_children()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_jobs" and not self.jobs_running():
            return False              # shown in the footer only while something runs
        return True

    def on_resize(self, event) -> None:
        self.screen.set_class(event.size.width < 100, "narrow")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, _, title, _ in ACTIONS:
            yield SystemCommand(title, f"key: {SHOWN_KEYS.get(key, key)}", partial(self.run_action, action))


def run_tui(request: PlanRequest) -> int:
    """`dq-planner` with no arguments. Returns the exit code."""
    app = PlannerApp(request)
    try:
        rc = app.run()
    finally:
        app.kill_children()
        background.WORKER.shutdown()
    return rc or 0
