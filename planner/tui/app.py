"""dq-planner's terminal workbench: choose, see the plan, then export, quantize or serve.

The app renders the core's Plan and computes nothing of its own. On every change it plans the selected
scheme alone (make_plan with request.schemes = [that scheme], well under 50 ms for the 671B model; see
bench/bench_tui.py); the plan of every scheme (for the comparison, the accuracy table, the plots and the
recommendation) runs once per set of choices in a separate planning process (planner/tui/background.py),
and when it is there the selected scheme is read from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import (DataTable, Footer, Header, Input, Label, Select, Static, TabbedContent,
                             TabPane)
from textual.worker import Worker, WorkerState

from planner.core import catalog as cat
from planner.core.plan import Plan, PlanRequest, SchemePlan
from planner.planning import make_plan
from planner.core.schemes import all_ids, ids_for
from planner.errors import PlannerError
from planner.render.units import GiB, human
from planner.tui import background
from planner.tui import format as fmt
from planner.tui.choices import (AUTO_DEVICE, AUTO_MODEL, CACHE_TYPES, FLASH_ATTN, PATH_CHOICE, TASKS, base_request,
                                 default_gguf_name, device_options, engine_options, kv_options,
                                 model_options, parse_rpc, parse_split, request_args,
                                 same_request, scheme_options, write_new_file)
from planner.tui.jobs import dq_planner_argv
from planner.tui.screens.dialogs import Field, FormDialog
from planner.tui.widgets.jobs import QuantizePanel, RunView, ServePanel
from planner.tui.widgets.memory import MemoryBars
from planner.tui.widgets.plots import AccuracyMemoryPlot, ComponentPlot, PlotsView
from planner.tui.widgets.tensors import TensorView

FILE_PREFIX = "file:"          # scheme choice meaning "the GGUF file as it is"
TABS = ("plan", "schemes", "accuracy", "tensors", "plots", "run")
DEFAULT_SCHEME = "Q4_K_M"


def assets_dir() -> Path:
    """assets/ beside the package (a checkout or an editable install), else the installed data folder."""
    env = os.environ.get("DQ_PLANNER_ASSETS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "assets"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "dq-planner" / "assets"


# (key, action, footer label, palette title, shown in the footer)
ACTIONS: list[tuple[str, str, str, str, bool]] = [
    ("m", "choose('model')", "Model", "Choose the model", True),
    ("s", "choose('scheme')", "Scheme", "Choose the quantization scheme", True),
    ("d", "choose('device')", "Device", "Choose the hardware profile", True),
    ("g", "choose('gpus')", "GPUs", "Set the number of GPUs per node", False),
    ("n", "choose('nodes')", "Nodes", "Set the number of nodes", False),
    ("c", "choose('ctx')", "Context", "Set the context length", False),
    ("k", "choose('kv')", "KV mode", "Choose the KV cache mode (mla, mla-kv, legacy)", False),
    ("e", "choose('engine')", "Engine", "Choose the serving engine", False),
    ("left_square_bracket", "step_scheme(-1)", "Prev", "Previous scheme", False),
    ("right_square_bracket", "step_scheme(1)", "Next", "Next scheme", False),
    ("a", "apply_recommendation", "Apply", "Apply the recommended scheme", False),
    ("1", "show_tab('plan')", "Plan", "Show the plan: summary, memory per device, recommendation", False),
    ("2", "show_tab('schemes')", "Schemes", "Show every scheme side by side", False),
    ("3", "show_tab('accuracy')", "Accuracy", "Show the accuracy table of the model", False),
    ("4", "show_tab('tensors')", "Tensors", "Show the tensor table and the bytes per type", False),
    ("5", "show_tab('plots')", "Plots", "Show the plots", False),
    ("6", "show_tab('run')", "Run", "Show quantization and server logs", False),
    ("f", "filter_tensors", "Filter", "Filter the tensors by name or type", False),
    ("x", "export_plan", "Export", "Export the plan as JSON", True),
    ("l", "launch_commands", "Launch", "Show and save the launch commands", True),
    ("u", "quantize", "Quant", "Quantize a GGUF with the selected scheme", True),
    ("r", "serve", "Serve", "Start a server with this plan", True),
    ("K", "stop_jobs", "Stop", "Stop the running quantization and server", True),
    ("b", "toggle_choices", "Choices", "Show or hide the choices panel", False),
    ("escape", "leave_field", "Leave", "Leave the field being edited (back to the plan)", False),
]


class NumberInput(Input):
    """A whole-number field that passes letters on, so the app's keys (m, s, d, ...) work from it too."""

    async def _on_key(self, event) -> None:
        if event.is_printable and event.character and not event.character.isdigit():
            event.prevent_default()    # not typed here (Input's own handler is skipped); it bubbles to the app

    def __init__(self, **kw) -> None:
        super().__init__(restrict=r"[0-9]*", **kw)

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return character is not None and character.isdigit()


class ChoiceCommands(Provider):
    """Command palette: pick a model, scheme or device by name."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, PlannerApp)
        matcher = self.matcher(query)
        items: list[tuple[str, str, object]] = []
        for _, m in model_options():
            if m != PATH_CHOICE:
                items.append((f"Model: {m}", "plan this model", partial(app.set_select, "ch-model", m)))
        for label, s in app.scheme_choices:
            items.append((f"Scheme: {label}", "plan this scheme", partial(app.set_select, "ch-scheme", s)))
        for label, d in device_options():
            items.append((f"Device: {label}", "plan on this hardware", partial(app.set_select, "ch-device", d)))
        for title, help_text, cb in items:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)


class PlannerApp(App[int]):
    TITLE = "dq-planner"
    CSS_PATH = [assets_dir() / "tui.tcss"]
    COMMANDS = App.COMMANDS | {ChoiceCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        *[Binding(k, a, label, show=show, tooltip=title) for k, a, label, title, show in ACTIONS],
    ]

    def __init__(self, request: PlanRequest | None = None, *, full_plan_delay: float = 0.25) -> None:
        super().__init__()
        self.request = base_request(request or PlanRequest())
        req0 = request or PlanRequest()
        if req0.schemes:
            self.scheme_id = req0.schemes[0]
        elif req0.model_file:
            self.scheme_id = FILE_PREFIX
        else:
            ids = self._valid_scheme_ids(self.request)
            self.scheme_id = DEFAULT_SCHEME if ids is None or DEFAULT_SCHEME in ids else ids[0]
        self.full_plan_delay = full_plan_delay
        self.plan: Plan | None = None
        self.sp: SchemePlan | None = None
        self.full_plan: Plan | None = None
        self.full_key: PlanRequest | None = None
        self.full_error: str | None = None
        self.full_pending = False
        self.error: str | None = None
        self.last_replan_s = 0.0
        self.scheme_choices: list[tuple[str, str]] = self._scheme_choice_list(None)
        self._full_timer = None
        self._tensors_dirty = True
        self._tensor_cache: tuple | None = None
        self._last_quant_output = ""
        self._shown: dict[str, object] = {}    # choice widget -> the value the app last put there
        self.child_processes: list = []       # every child started, so that none outlives the app

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Horizontal(id="body"):
            with VerticalScroll(id="choices"):
                yield from self._choice_fields()
            with Vertical(id="main"):
                yield Static("", id="error")
                with TabbedContent(id="tabs", initial="plan"):
                    with TabPane("Plan", id="plan"):
                        with VerticalScroll(id="plan-scroll"):
                            yield Static("", id="summary")
                            yield Label("Memory per device", id="bars-title", classes="section")
                            yield MemoryBars(id="bars")
                            yield Static("", id="recommendation")
                            yield Static("", id="notes")
                    with TabPane("Schemes", id="schemes"):
                        yield Static("", id="schemes-note")
                        yield DataTable(id="scheme-table", cursor_type="row", zebra_stripes=True)
                    with TabPane("Accuracy", id="accuracy"):
                        yield Static("", id="accuracy-note")
                        yield DataTable(id="accuracy-table", cursor_type="row", zebra_stripes=True)
                    with TabPane("Tensors", id="tensors"):
                        yield TensorView(id="tensor-view")
                    with TabPane("Plots", id="plots"):
                        yield PlotsView(id="plots-view")
                    with TabPane("Run", id="run"):
                        yield RunView(id="run-view")
        yield Footer(compact=True)

    def _choice_fields(self) -> Iterable:
        r = self.request

        def row(label: str, widget) -> Horizontal:
            return Horizontal(Label(label, classes="choice-label"), widget, classes="choice")

        known = set(cat.catalog()) | {AUTO_MODEL}
        model_value = PATH_CHOICE if (r.model_file or r.model not in known) else r.model
        path_value = r.model_file or (r.model if model_value == PATH_CHOICE else "")
        yield Label("Model", classes="section")
        yield row("model", Select(model_options(), value=model_value, allow_blank=False, id="ch-model",
                                  compact=True))
        yield row("path", Input(value=path_value, placeholder="HF folder or .gguf", id="ch-path", compact=True))
        yield row("scheme", Select(self.scheme_choices, value=self.scheme_id, allow_blank=False,
                                   id="ch-scheme", compact=True))
        yield row("engine", Select(engine_options(), value=r.engine, allow_blank=False, id="ch-engine",
                                   compact=True))
        yield Label("Hardware", classes="section")
        dev = r.device if r.device and r.device != AUTO_DEVICE else AUTO_DEVICE
        devs = device_options()
        if dev not in [v for _, v in devs]:
            devs.append((dev, dev))
        yield row("device", Select(devs, value=dev, allow_blank=False, id="ch-device", compact=True))
        yield row("gpus", NumberInput(value=str(r.gpus) if r.gpus else "", placeholder="profile",
                                id="ch-gpus", compact=True))
        yield row("nodes", NumberInput(value=str(r.nodes), id="ch-nodes", compact=True))
        yield row("rpc", Input(value=",".join(r.rpc), placeholder="host:port[=mem],...", id="ch-rpc",
                               compact=True))
        yield Label("Context", classes="section")
        yield row("ctx", NumberInput(value=str(r.ctx), id="ch-ctx", compact=True))
        yield row("kv", Select(kv_options(), value=r.kv_mode or "mla", allow_blank=False, id="ch-kv",
                               compact=True))
        yield row("K type", Select([(t, t) for t in CACHE_TYPES], value=r.cache_type_k, allow_blank=False,
                                    id="ch-ctk", compact=True))
        yield row("V type", Select([(t, t) for t in CACHE_TYPES], value=r.cache_type_v, allow_blank=False,
                                    id="ch-ctv", compact=True))
        yield row("flash", Select([(t, t) for t in FLASH_ATTN], value=r.flash_attn, allow_blank=False,
                                  id="ch-fa", compact=True))
        yield row("slots", NumberInput(value=str(r.parallel), id="ch-parallel", compact=True))
        yield Label("Placement", classes="section")
        yield row("ngl", NumberInput(value="" if r.ngl is None else str(r.ngl), placeholder="all",
                               id="ch-ngl", compact=True))
        yield row("cpu moe", NumberInput(value=str(r.n_cpu_moe), id="ch-cpumoe", compact=True))
        yield row("split", Input(value=",".join(f"{x:g}" for x in r.tensor_split or []), placeholder="a,b,...",
                                 id="ch-split", compact=True))
        yield row("task", Select([(t, t) for t in TASKS], value=r.task, allow_blank=False, id="ch-task",
                                 compact=True))

    def on_mount(self) -> None:
        background.WORKER.start()               # the planning process starts while the screen is built
        self._shown = {sel.id: sel.value for sel in self.query(Select) if sel.id and sel.id.startswith("ch-")}
        st = self.query_one("#scheme-table", DataTable)
        for c in ("", "scheme", "GiB", "bpw", "fullest dev.", "headroom", "fits", "w. acc."):
            st.add_column(c)
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            loop.add_signal_handler(signal.SIGHUP, self._hangup)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        self.replan()
        self.set_focus(self.query_one("#plan-scroll"))

    # ---------------------------------------------------------------- planning
    def _valid_scheme_ids(self, req: PlanRequest) -> list[str] | None:
        """The schemes the core offers for this model and engine (None: known only once planned)."""
        try:
            if req.engine == "llama.cpp":
                if req.model_file:
                    return all_ids()
                arch = cat.resolve_model(req.model).hparams.arch
                return ids_for(arch)
            from planner.core.hf_checkpoint import formats_for

            return [f.id for f in formats_for(cat.resolve_model(req.model))]
        except PlannerError:
            return None

    def _scheme_choice_list(self, plan: Plan | None) -> list[tuple[str, str]]:
        if plan is None:
            ids = self._valid_scheme_ids(self.request)
            out = scheme_options(ids)
        else:
            out = [(s.id, s.id) for s in plan.schemes if s.kind != "file"]
        if self.request.model_file:
            file_id = next((s.id for s in (plan.schemes if plan else []) if s.kind == "file"), "as is")
            out.insert(0, (f"file ({file_id})", FILE_PREFIX))
        return out

    def change_source(self, **changes) -> None:
        """A new model, model file or engine: the scheme list follows, the scheme stays if it still applies."""
        new = replace(self.request, **changes)
        if same_request(new, self.request):
            return
        ids = self._valid_scheme_ids(new)
        if changes.get("model_file"):
            self.scheme_id = FILE_PREFIX
        elif self.scheme_id == FILE_PREFIX and not new.model_file or ids is not None and self.scheme_id not in ids:
            self.scheme_id = DEFAULT_SCHEME if ids is None or DEFAULT_SCHEME in ids else ids[0]
        self.request = new
        self.set_scheme_choices(self._scheme_choice_list(None))
        self.replan()

    def _pick(self, plan: Plan) -> SchemePlan:
        if self.scheme_id == FILE_PREFIX:
            for s in plan.schemes:
                if s.kind == "file":
                    return s
            raise PlannerError("this plan has no GGUF file; choose a scheme")
        for s in plan.schemes:
            if s.id == self.scheme_id and s.kind != "file":
                return s
        raise KeyError(self.scheme_id)

    def plan_selected(self) -> tuple[Plan, SchemePlan]:
        """The plan of the selected scheme: read from the all-schemes plan when it is current."""
        base = self.request
        if self.full_plan is not None and self.full_key is not None and same_request(self.full_key, base):
            try:
                return self.full_plan, self._pick(self.full_plan)
            except KeyError:
                pass
        if self.scheme_id == FILE_PREFIX:
            plan = make_plan(replace(base, schemes=None))
        else:
            plan = make_plan(replace(base, schemes=[self.scheme_id]))
        return plan, self._pick(plan)

    def _full_is_current(self) -> bool:
        return self.full_plan is not None and self.full_key is not None and same_request(self.full_key, self.request)

    def replan(self) -> None:
        t0 = perf_counter()
        if self.request.model == AUTO_MODEL and not self._full_is_current():
            # --model auto plans every catalog model: seconds, so only ever in the worker
            self.show_error(None)
            self.query_one("#summary", Static).update(
                Text("Comparing every model with measured accuracy on this hardware...", style="italic"))
            self.schedule_full_plan(now=True)
            self.last_replan_s = perf_counter() - t0
            return
        try:
            plan, sp = self.plan_selected()
        except PlannerError as e:
            self.show_error(str(e))
            self.last_replan_s = perf_counter() - t0
            return
        self.plan, self.sp = plan, sp
        with self.batch_update():
            self.show_error(None)
            self.render_selected()
        self.last_replan_s = perf_counter() - t0
        self.schedule_full_plan()

    def schedule_full_plan(self, now: bool = False) -> None:
        base = self.request
        if self.full_key is not None and same_request(self.full_key, base) and (self.full_plan or self.full_error):
            return
        self.full_pending = True
        if self._full_timer is not None:
            self._full_timer.stop()
        if self.full_plan_delay <= 0 or now:
            self._start_full_plan()
        else:
            self._full_timer = self.set_timer(self.full_plan_delay, self._start_full_plan)

    def _start_full_plan(self) -> None:
        self._full_timer = None
        self.run_worker(self._plan_all(self.request, self._full_schemes()), exclusive=True,
                        group="full-plan", name="full-plan", exit_on_error=False)

    @staticmethod
    async def _plan_all(base: PlanRequest, schemes: list[str] | None):
        """In the planning process (planner/tui/background.py): the screen never waits on it."""
        token = object()
        try:
            return await asyncio.to_thread(background.WORKER.plan, base, schemes, token)
        except asyncio.CancelledError:
            background.WORKER.cancel(token)      # superseded by newer choices: stop planning them
            raise

    def _full_schemes(self) -> list[str] | None:
        """None: the core's own list. A GGUF file is planned as it is and against every scheme of its
        architecture (what re-quantizing its source would give)."""
        r = self.request
        if not r.model_file or r.engine != "llama.cpp" or self.plan is None:
            return None
        arch = self.plan.model.architecture
        return ids_for(arch)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "full-plan" or self._exiting():
            return
        try:
            self._full_plan_done(event)
        except NoMatches:
            pass            # the app closed while the answer was on its way: no screen to show it on

    def _full_plan_done(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if event.state == WorkerState.ERROR:
            # not a bad choice (those come back as err): the planning process itself failed
            self.full_key, self.full_plan, self.full_error = self.request, None, f"{type(w.error).__name__}: {w.error}"
            self.full_pending = False
            self.render_full()
            return
        if event.state != WorkerState.SUCCESS:
            return
        base, plan, err = w.result
        if not same_request(base, self.request):
            return
        self.full_key, self.full_plan, self.full_error = base, plan, err
        self.full_pending = False
        if err is not None and self.request.model == AUTO_MODEL:
            self.show_error(err)
        if plan is not None:
            self.set_scheme_choices(self._scheme_choice_list(plan))
            try:
                self.plan, self.sp = plan, self._pick(plan)
            except (KeyError, PlannerError):
                if self.request.model == AUTO_MODEL and plan.schemes:
                    # the compared model may not have the scheme: take the recommended one
                    rec = plan.recommendation.scheme if plan.recommendation else plan.schemes[0].id
                    self.scheme_id = rec
                    self.plan, self.sp = plan, self._pick(plan)
                    self._sync_choices(plan)
        self.render_full()
        self.render_selected()

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

    # ---------------------------------------------------------------- rendering
    def show_error(self, message: str | None) -> None:
        self.error = message
        err = self.query_one("#error", Static)
        err.update(Text("! " + message) if message else "")
        err.set_class(bool(message), "visible")
        self.query_one("#tabs").set_class(bool(message), "stale")

    def hardware_fallback(self) -> str:
        r = self.request
        dev = r.device or "detected (else h100)"
        gpus = f"{r.gpus}" if r.gpus else "profile's"
        return f"{r.nodes} node(s) x {gpus} x {dev}"

    def render_selected(self) -> None:
        plan, sp = self.plan, self.sp
        if plan is None or sp is None:
            return
        hw = plan.hardware
        where = f"{hw.gpus}x{hw.device}" if hw else (self.request.device or "auto")
        if hw and hw.nodes > 1:
            where = f"{hw.nodes}x{where}"
        self.sub_title = " · ".join(x for x in (plan.model.id, sp.id, where, f"ctx {plan.context}",
                                                plan.kv_mode or "") if x)
        self.query_one("#summary", Static).update(fmt.summary(plan, sp, self.hardware_fallback()))
        self.query_one("#bars", MemoryBars).show(sp)
        full = self.full_plan if self.full_key is not None and same_request(self.full_key, self.request) else None
        self.query_one("#recommendation", Static).update(
            fmt.recommendation(full.recommendation if full else None, self.full_pending, sp.id))
        notes = fmt.notes(plan, sp)
        self.query_one("#notes", Static).update(
            Text("\n".join(f"note: {n}" for n in notes), style="dim") if notes else "")
        self.query_one("#plot-components", ComponentPlot).show(sp)
        self._sync_choices(plan)
        self._tensors_dirty = True
        if self.query_one("#tabs", TabbedContent).active == "tensors":
            self.render_tensors()
        self._mark_scheme_row()

    def render_tensors(self) -> None:
        if self._tensors_dirty:
            self.query_one("#tensor-view", TensorView).show(self.with_tensors(self.sp))
            self._tensors_dirty = False

    def with_tensors(self, sp: SchemePlan | None) -> SchemePlan | None:
        """The scheme with its tensor list (the all-schemes plan comes without them: planned here, once)."""
        if sp is None or sp.tensors:
            return sp
        key = (repr(self.request), sp.kind, sp.id)
        if self._tensor_cache and self._tensor_cache[0] == key:
            return self._tensor_cache[1]
        try:
            if sp.kind == "file":
                plan = make_plan(replace(self.request, schemes=None))
            else:
                plan = make_plan(replace(self.request, schemes=[sp.id]))
        except PlannerError:
            return sp
        full = next((s for s in plan.schemes if s.kind == sp.kind and s.id == sp.id), sp)
        self._tensor_cache = (key, full)
        return full

    def _sync_choices(self, plan: Plan) -> None:
        """Show what the plan resolved (KV mode, GPU count) without changing the request."""
        kv = self.query_one("#ch-kv", Select)
        kv.disabled = plan.kv_mode is None
        if plan.kv_mode and kv.value != plan.kv_mode:
            self._shown["ch-kv"] = plan.kv_mode
            with kv.prevent(Select.Changed):
                kv.value = plan.kv_mode
        gpus = self.query_one("#ch-gpus", Input)
        if plan.hardware is not None:
            gpus.placeholder = f"{plan.hardware.gpus} ({plan.hardware.source})"
        if self.request.device in (None, AUTO_DEVICE):
            self._label_detected()
        sel = self.query_one("#ch-scheme", Select)
        if sel.value != self.scheme_id and any(v == self.scheme_id for _, v in self.scheme_choices):
            self._shown["ch-scheme"] = self.scheme_id
            with sel.prevent(Select.Changed):
                sel.value = self.scheme_id

    def _label_detected(self) -> None:
        """Name what detection found on the "auto" choice (detection has run: the plan used it)."""
        try:
            from planner.hardware.detect import detect_hardware, summary_line

            found = summary_line(detect_hardware())
            label = "auto (none found)" if found.startswith("no ") else f"auto ({found.removeprefix('detected ')})"
        except Exception:          # detection is optional here: the plan itself says what it used
            return
        sel = self.query_one("#ch-device", Select)
        opts = [(label if v == AUTO_DEVICE else lb, v) for lb, v in device_options()]
        if sel.value not in [v for _, v in opts]:
            return
        value = sel.value
        if dict((v, lb) for lb, v in sel._options).get(AUTO_DEVICE) == label:
            return
        with sel.prevent(Select.Changed):
            sel.set_options(opts)
            sel.value = opts[-1][1] if value == opts[0][1] else opts[0][1]   # the shown label follows a change
            sel.value = value

    def set_scheme_choices(self, choices: list[tuple[str, str]]) -> None:
        if choices == self.scheme_choices:
            return
        self.scheme_choices = choices
        sel = self.query_one("#ch-scheme", Select)
        with sel.prevent(Select.Changed):
            sel.set_options(choices)
            if any(v == self.scheme_id for _, v in choices):
                sel.value = self.scheme_id
        self._shown["ch-scheme"] = sel.value

    def render_full(self) -> None:
        plan = self.full_plan if self.full_key is not None and same_request(self.full_key, self.request) else None
        note = self.query_one("#schemes-note", Static)
        table = self.query_one("#scheme-table", DataTable)
        table.clear()
        if plan is None:
            note.update(Text(f"Could not plan every scheme: {self.full_error}" if self.full_error
                             else "Planning every scheme...", style="italic"))
        else:
            rec = plan.recommendation.scheme if plan.recommendation else None
            note.update(Text("Enter: use the scheme under the cursor.  ★ recommended  ▶ selected", style="dim"))
            for s in plan.schemes:
                full = fmt.fullest_device(s)
                acc = s.accuracy.weighted_avg if s.accuracy and s.accuracy.weighted_avg is not None else None
                fits = "-" if s.fits is None else ("yes" if s.fits else "NO")
                table.add_row(
                    "★" if s.id == rec else "", f"{s.id} (this file)" if s.kind == "file" else s.id,
                    Text(f"{s.size_bytes / GiB:.2f}", justify="right"),
                    Text(f"{s.bpw:.2f}", justify="right"),
                    Text(human(full.total_bytes) if full else "-", justify="right"),
                    Text(human(s.headroom_bytes) if s.headroom_bytes is not None else "-", justify="right"),
                    Text(fits, style="green" if s.fits else ("red" if s.fits is False else "")),
                    Text(f"{acc:.2f}" if acc is not None else ("unmeasured" if s.accuracy else "-"),
                         justify="right"),
                    key=(FILE_PREFIX if s.kind == "file" else s.id),
                )
            self._mark_scheme_row()
        self._render_accuracy(plan)
        self.query_one("#plot-accuracy", AccuracyMemoryPlot).show(plan, self.full_pending)
        self.query_one("#plot-note", Static).update(
            Text("Points: schemes with both memory and measured accuracy; vertical line: device capacity.",
                 style="dim"))

    def _mark_scheme_row(self) -> None:
        table = self.query_one("#scheme-table", DataTable)
        if not table.row_count:
            return
        col = table.ordered_columns[0].key
        for rk in table.rows:
            cur = table.get_cell(rk, col)
            want = "▶" if rk.value == self.scheme_id else ("★" if cur == "★" or cur == "▶★" else "")
            rec = self.full_plan.recommendation.scheme if self.full_plan and self.full_plan.recommendation else None
            if rk.value == self.scheme_id:
                want = "▶★" if rk.value == rec else "▶"
            else:
                want = "★" if rk.value == rec else ""
            if cur != want:
                table.update_cell(rk, col, want)

    def _render_accuracy(self, plan: Plan | None) -> None:
        note = self.query_one("#accuracy-note", Static)
        table = self.query_one("#accuracy-table", DataTable)
        table.clear(columns=True)
        rows = [s for s in (plan.schemes if plan else []) if s.accuracy is not None]
        if plan is None:
            note.update(Text("Planning every scheme..." if self.full_pending else "No plan.", style="italic"))
            return
        if not rows:
            note.update(Text(f"No accuracy figures for {plan.model.id} in this plan (the accuracy tables are not "
                             "part of it yet, or the model has no measured scheme).", style="italic"))
            return
        sources = sorted({s.accuracy.source for s in rows if s.accuracy.source})
        note.update(Text(f"{plan.model.name}: measured accuracy. Source: {'; '.join(sources)}", style="dim"))
        benches: list[str] = []
        for s in rows:
            for b in s.accuracy.per_benchmark:
                if b not in benches:
                    benches.append(b)
        table.add_columns("scheme", *benches, "avg", "weighted", "drop %")
        for s in rows:
            a = s.accuracy

            def num(v: float | None) -> Text:
                return Text("-" if v is None else f"{v:.2f}", justify="right")

            table.add_row(s.id, *[num(a.per_benchmark.get(b)) for b in benches], num(a.average),
                          num(a.weighted_avg), num(a.drop_pct), key=s.id)

    # ---------------------------------------------------------------- choices
    def set_select(self, select_id: str, value: str) -> None:
        """Set a choice as the user would (the palette uses it)."""
        sel = self.query_one(f"#{select_id}", Select)
        sel.value = value

    def update_request(self, **changes) -> None:
        new = replace(self.request, **changes)
        if same_request(new, self.request):
            return
        self.request = new
        self.replan()

    def set_scheme(self, scheme_id: str) -> None:
        if scheme_id == self.scheme_id and self.error is None:
            return
        self.scheme_id = scheme_id
        self.replan()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        sid, v = event.select.id, event.value
        if v is Select.NULL or sid is None or not sid.startswith("ch-"):
            return
        event.stop()
        if self._shown.get(sid) == v:
            return                      # the value the app itself put there (at start, or resolved)
        self._shown[sid] = v
        if sid == "ch-scheme":
            self.set_scheme(str(v))
        elif sid == "ch-model":
            if v == PATH_CHOICE:
                self.query_one("#ch-path", Input).focus()
                return
            self.change_source(model=str(v), model_file=None)
        elif sid == "ch-engine":
            self.change_source(engine=str(v))
        elif sid == "ch-device":
            self.update_request(device=None if v == AUTO_DEVICE else str(v))
        elif sid == "ch-kv":
            self.update_request(kv_mode=str(v), layout=None)
        elif sid == "ch-ctk":
            self.update_request(cache_type_k=str(v))
        elif sid == "ch-ctv":
            self.update_request(cache_type_v=str(v))
        elif sid == "ch-fa":
            self.update_request(flash_attn=str(v))
        elif sid == "ch-task":
            self.update_request(task=str(v))

    _INT_FIELDS = {
        # input id: (request field, minimum, value when empty, flag for messages)
        "ch-gpus": ("gpus", 1, None, "--gpus"),
        "ch-nodes": ("nodes", 1, 1, "--nodes"),
        "ch-ctx": ("ctx", 1, None, "--ctx"),
        "ch-parallel": ("parallel", 1, 1, "--parallel"),
        "ch-ngl": ("ngl", 0, None, "--ngl"),
        "ch-cpumoe": ("n_cpu_moe", 0, 0, "--n-cpu-moe"),
    }

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        iid = event.input.id
        if iid is None or not iid.startswith("ch-") or iid == "ch-path":
            return
        event.stop()
        text = event.value.strip()
        try:
            if iid in self._INT_FIELDS:
                name, lo, empty, flag = self._INT_FIELDS[iid]
                if not text:
                    if empty is None and name == "ctx":
                        return               # keep the last context while the field is being retyped
                    self.update_request(**{name: empty})
                    return
                n = int(text)
                if n < lo:
                    raise PlannerError(f"{flag} must be at least {lo}, got {n}")
                self.update_request(**{name: n})
            elif iid == "ch-rpc":
                self.update_request(rpc=parse_rpc(text))
            elif iid == "ch-split":
                self.update_request(tensor_split=parse_split(text))
        except ValueError:
            self.show_error(f"{iid[3:]} must be an integer, got '{text}'")
        except PlannerError as e:
            self.show_error(str(e))

    @on(Input.Submitted, "#ch-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = event.value.strip()
        if not path:
            return
        sel = self.query_one("#ch-model", Select)
        self._shown["ch-model"] = PATH_CHOICE
        with sel.prevent(Select.Changed):
            sel.value = PATH_CHOICE
        if path.lower().endswith(".gguf"):
            self.change_source(model_file=path)
        else:
            self.change_source(model=path, model_file=None)

    @on(DataTable.RowSelected, "#scheme-table")
    def _scheme_row(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.set_scheme(event.row_key.value)

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tensors":
            self.render_tensors()

    # ---------------------------------------------------------------- actions
    def action_choose(self, what: str) -> None:
        self.query_one("#choices").display = True
        ids = {"model": "ch-model", "scheme": "ch-scheme", "device": "ch-device", "gpus": "ch-gpus",
               "nodes": "ch-nodes", "ctx": "ch-ctx", "kv": "ch-kv", "engine": "ch-engine"}
        w = self.query_one(f"#{ids[what]}")
        w.focus()
        if isinstance(w, Select) and not w.disabled:
            w.action_show_overlay()

    def action_step_scheme(self, step: int) -> None:
        ids = [v for _, v in self.scheme_choices]
        if not ids:
            return
        i = ids.index(self.scheme_id) if self.scheme_id in ids else -1
        self.set_select("ch-scheme", ids[(i + step) % len(ids)])

    def action_apply_recommendation(self) -> None:
        plan = self.full_plan if self.full_key is not None and same_request(self.full_key, self.request) else None
        if plan is None or plan.recommendation is None:
            self.notify("No recommendation in this plan yet.", severity="warning")
            return
        rec = plan.recommendation.scheme
        if rec in [v for _, v in self.scheme_choices]:
            self.set_select("ch-scheme", rec)

    _TAB_FOCUS = {"plan": "#plan-scroll", "schemes": "#scheme-table", "accuracy": "#accuracy-table",
                  "tensors": "#tensor-table", "plots": "#plots-view", "run": "#quantize-log"}

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        if tab == "tensors":
            self.render_tensors()
        # the tab's content takes the keys, so the arrows and page keys scroll it at once
        target = self.query_one(self._TAB_FOCUS[tab])
        if target.focusable:
            self.set_focus(target)

    def action_filter_tensors(self) -> None:
        self.action_show_tab("tensors")
        self.query_one("#tensor-filter", Input).focus()

    def action_leave_field(self) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        self.set_focus(tabs.query_one("Tabs"))

    def action_toggle_choices(self) -> None:
        ch = self.query_one("#choices")
        ch.display = not ch.display

    def _plan_for_export(self) -> Plan:
        if self.full_plan is not None and self.full_key is not None and same_request(self.full_key, self.request):
            return self.full_plan
        return make_plan(replace(self.request, schemes=self._full_schemes()))

    def _model_stem(self) -> str:
        return Path(self.request.model_file or self.request.model).name.removesuffix(".gguf")

    def _scheme_arg(self) -> str:
        return self.sp.id if self.sp is not None else self.scheme_id

    def action_export_plan(self) -> None:
        default = f"dq-plan-{self._model_stem()}-{self._scheme_arg()}.json"

        def done(vals: dict[str, str] | None) -> None:
            if not vals:
                return
            try:
                doc = self._plan_for_export().to_dict()
                p = write_new_file(vals["path"], json.dumps(doc, indent=2) + "\n")
            except PlannerError as e:
                self.notify(str(e), severity="error")
                return
            self.notify(f"Plan written to {p}")

        self.push_screen(FormDialog("Export the plan (JSON, all schemes)", [Field("path", "file", default)],
                                    "Save"), done)

    def launch_text(self) -> str:
        """The launch commands of the selected scheme, as the engines build them from the plan:
        llama.cpp's quantize + explicit llama-server lines, or the vLLM/SGLang commands per node."""
        sp = self.sp
        note = f"{self._model_stem()} {self._scheme_arg()}"
        if sp is not None:
            note += f": {human(sp.size_bytes)}"
            full = fmt.fullest_device(sp)
            if full is not None:
                note += f", {human(full.total_bytes)} on the fullest device ({full.device})"
        from planner.engines.registry import engine

        if self.plan is None or sp is None:
            return f"# {note}\n# no plan\n"
        try:
            launch = engine(self.request.engine).launch(self.plan, self.request, sp.id)
        except PlannerError as e:
            return f"# {note}\n# no launch commands: {e}\n"
        return "#!/bin/sh\nset -eu\n" + "\n".join(launch.lines) + "\n"

    def action_launch_commands(self) -> None:
        stem = self._model_stem()
        text = self.launch_text()
        default = f"dq-launch-{stem}-{self._scheme_arg()}.sh"

        def done(vals: dict[str, str] | None) -> None:
            if not vals:
                return
            try:
                p = write_new_file(vals["path"], text)
                p.chmod(0o755)
            except PlannerError as e:
                self.notify(str(e), severity="error")
                return
            self.notify(f"Launch commands written to {p}")

        self.push_screen(FormDialog("Launch commands", [Field("path", "save as", default)], "Save", text=text),
                         done)

    def _panel(self, kind: str):
        return self.query_one("#quantize-panel" if kind == "quantize" else "#serve-panel")

    def action_quantize(self) -> None:
        panel: QuantizePanel = self._panel("quantize")
        if panel.running:
            self.notify("A quantization is running; K stops it.", severity="warning")
            return
        if self.scheme_id == FILE_PREFIX or self.sp is None:
            self.notify("Choose a scheme to quantize to.", severity="warning")
            return
        stem = self._model_stem()
        fields = [
            Field("input", "source", self.request.model_file or "", placeholder=f"{stem}-BF16.gguf (first shard)"),
            Field("output", "output", default_gguf_name(stem, self.sp.id)),
            Field("imatrix", "imatrix", placeholder="optional .dat/.gguf", required=False),
            Field("threads", "threads", placeholder="all cores", required=False),
        ]

        def done(vals: dict[str, str] | None) -> None:
            if vals:
                self.start_quantize(vals["input"], vals["output"], vals.get("imatrix") or None,
                                    vals.get("threads") or None)

        self.push_screen(FormDialog(f"Quantize to {self.sp.id}", fields, "Start"), done)

    def start_quantize(self, src: str, out: str, imatrix: str | None = None, threads: str | None = None) -> None:
        sp = self.sp
        assert sp is not None
        args = ["quantize", "--input", src, "--scheme", sp.id, "--output", out]
        if imatrix:
            args += ["--imatrix", imatrix]
        if threads:
            args += ["--threads", threads]
        panel: QuantizePanel = self._panel("quantize")
        panel.begin(out)
        self._last_quant_output = out
        self.action_show_tab("run")
        self._run_quantize(dq_planner_argv(args))

    @work(group="jobs", name="quantize", exit_on_error=False)
    async def _run_quantize(self, argv: list[str]) -> None:
        panel: QuantizePanel = self._panel("quantize")
        rc = await panel.run_child(argv)
        panel.finish(rc)

    def action_serve(self) -> None:
        panel: ServePanel = self._panel("serve")
        if panel.running:
            self.notify("A server is running; K stops it.", severity="warning")
            return
        default = self.request.model_file or self._last_quant_output
        fields = [Field("model", "GGUF", default, placeholder="model file (first shard)"),
                  Field("port", "port", "8080")]

        def done(vals: dict[str, str] | None) -> None:
            if vals:
                self.start_serve(vals["model"], vals["port"])

        self.push_screen(FormDialog("Serve with this plan", fields, "Start"), done)

    def start_serve(self, model_file: str, port: str) -> None:
        panel: ServePanel = self._panel("serve")
        args = ["serve", "--model-file", model_file, *request_args(self.request, with_model=False),
                "--port", port, "--keep-running"]
        panel.begin()
        self.action_show_tab("run")
        self._run_serve(dq_planner_argv(args))

    @work(group="jobs", name="serve", exit_on_error=False)
    async def _run_serve(self, argv: list[str]) -> None:
        panel: ServePanel = self._panel("serve")
        rc = await panel.run_child(argv)
        panel.finish(rc)

    def jobs_running(self) -> bool:
        return any(self._panel(k).running for k in ("quantize", "serve"))

    async def action_stop_jobs(self) -> None:
        if not self.jobs_running():
            self.notify("Nothing is running.")
            return
        await asyncio.gather(*(self._panel(k).stop() for k in ("quantize", "serve")))

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
            shown = {"left_square_bracket": "[", "right_square_bracket": "]"}.get(key, key)
            yield SystemCommand(title, f"key: {shown}", partial(self.run_action, action))


def run_tui(request: PlanRequest) -> int:
    """`dq-planner` with no arguments. Returns the exit code."""
    app = PlannerApp(request)
    try:
        rc = app.run()
    finally:
        app.kill_children()
        background.WORKER.shutdown()
    return rc or 0
