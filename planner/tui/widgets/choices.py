"""The choices panel, generated from the option schema (planner/options.py): one row per option that
has a control, in its section, parsed by the option's own converter (the messages are the command
line's). The model, its path and the scheme are the workbench's and come first.

The panel turns edits into messages (Changed: request fields and values; Invalid: one line; Committed:
Enter planned a typed value); the app passes them to the workbench. A typed field is planned on Enter
or when it loses the focus, never while it is typed. show() puts the workbench's state back without
sending anything, and shows only the controls the request's engine reads (Engine.own_options).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static
from textual.widgets._select import SelectCurrent, SelectOverlay
from textual.widgets.option_list import Option as ListOption

from planner.core.plan import Plan, PlanRequest
from planner.errors import PlannerError
from planner.options import CONTROLS, SECTIONS, Option, control_options
from planner.tui.choices import AUTO_DEVICE, AUTO_MODEL, PATH_CHOICE, hidden_options, model_options
from planner.tui.widgets.footer import KeyFooter

MODEL, PATH, SCHEME = "ch-model", "ch-path", "ch-scheme"


def control_id(o: Option) -> str:
    return f"ch-{o.dest}"


class FieldInput(Input):
    """A typed field of the choices panel: only the characters of its kind are typed into it (`typed`);
    any other printable key is passed on to the app, so the app's keys (m, s, d, ...) work from it too.
    A text field (typed None) takes every key."""

    def __init__(self, typed: str | None = None, restrict: str | None = None, **kw) -> None:
        super().__init__(restrict=restrict, **kw)
        self.typed = typed

    async def _on_key(self, event) -> None:
        if (self.typed is not None and event.is_printable and event.character
                and event.character not in self.typed):
            event.prevent_default()    # not typed here (Input's own handler is skipped); it bubbles to the app

    def check_consume_key(self, key: str, character: str | None) -> bool:
        if self.typed is None:
            return super().check_consume_key(key, character)
        return character is not None and character in self.typed


# kind -> (the characters typed into the field, the shape of a value being typed)
FIELD_KINDS: dict[str, tuple[str | None, str | None]] = {
    "int": ("0123456789", r"[0-9]*"),
    "int|auto": ("0123456789autoAUTO", r"[0-9]*|[aA]([uU]([tT][oO]?)?)?"),     # the letters of auto are typed
    "number": ("0123456789.", r"[0-9]*\.?[0-9]*"),
    "text": (None, None),
}


FLAG_OPTIONS = [("off", "off"), ("on", "on")]


class _Current(SelectCurrent):
    """The shown value of a choice: one line of fixed width, so a new value repaints it without a new
    layout of the screen (Textual's own lays the screen out again on every change)."""

    def update(self, label) -> None:
        self.label = label
        self.has_value = label is not Select.NULL
        self.query_one("#label", Static).update(self.placeholder if label is Select.NULL else label, layout=False)


class ChoiceList(ModalScreen):
    """A Choice's list of values, on a screen of its own over the app's (transparent: the app's screen
    stays visible around it), placed under the field like Select's own list.

    Select's list is a widget of the app's screen: showing and hiding it costs a layout of that whole
    screen. Closing this one pops a screen, which only repaints the app's screen as it was laid out, so
    the frame that shows the chosen value (and its new plan) comes one layout sooner. The list itself is
    Select's (SelectOverlay: the same keys, type-to-search and "Dismiss menu"); dismissed with the index
    of the chosen option, or None."""

    DEFAULT_CSS = """
    ChoiceList {
        background: transparent;
        align: left top;
    }
    ChoiceList > SelectOverlay {
        height: auto;
        max-height: 12;
        scrollbar-size-vertical: 1;
        color: $foreground;
        border: tall $border-blurred;
        background: $surface;
        & > .option-list--option {
            padding: 0 1;
        }
    }
    """

    def __init__(self, choice: "Choice") -> None:
        super().__init__()
        self.choice = choice
        self._done = False

    def compose(self) -> ComposeResult:
        yield SelectOverlay(type_to_search=True)
        yield KeyFooter()

    def on_screen_resume(self) -> None:
        """Filled on every opening: the screen is kept (installed) between openings, as removing a closed
        screen from the app would cost the app's screen one more layout."""
        self._done = False
        c = self.choice
        overlay = self.query_one(SelectOverlay)
        overlay.clear_options()
        overlay._search_query = ""        # what was typed to search at the last opening
        overlay.add_options([ListOption(prompt) for prompt, _ in c._options])
        region = c.region
        height = min(12, len(c._options) + 2)
        below = self.app.size.height - 1 - (region.y + region.height)
        y = region.y + region.height if below >= height or region.y < height else region.y - height
        # as wide as the longest value (ids stay whole on one line: border, padding, scrollbar beside
        # them), moved left where the screen ends
        longest = max((len(str(prompt)) for prompt, _ in c._options), default=8)
        width = min(max(region.width, longest + 8), self.app.size.width)
        overlay.styles.width = width
        overlay.styles.offset = (max(0, min(region.x, self.app.size.width - width)), max(0, y))
        index = next((i for i, (_, v) in enumerate(c._options) if v == c.value), 0)
        overlay.focus(scroll_visible=False)
        overlay.select(index)

    def _finish(self, index: int | None) -> None:
        if not self._done:
            self._done = True
            self.dismiss(index)

    @on(SelectOverlay.UpdateSelection)
    def _chosen(self, event: SelectOverlay.UpdateSelection) -> None:
        event.stop()
        self._finish(event.option_index)

    @on(SelectOverlay.Dismiss)
    def _dismissed(self, event: SelectOverlay.Dismiss) -> None:
        event.stop()
        self._finish(None)

    def on_click(self, event) -> None:
        if self.get_widget_at(event.screen_x, event.screen_y)[0] is self:
            self._finish(None)            # a click beside the list closes it, as with Select's


class Choice(Select):
    """A Select whose list opens on a screen of its own (ChoiceList), and whose new value reaches its
    panel at once (in the same frame as the list closing), not one message later."""

    def _watch_value(self, value) -> None:
        super()._watch_value(value)
        panel = next((a for a in self.ancestors if isinstance(a, ChoicesPanel)), None)
        if panel is not None and self.is_mounted:
            panel.chosen(self.id, value)

    def compose(self) -> ComposeResult:
        yield _Current(self.prompt)
        # Select keeps its options and the highlighted one in this (never shown) list
        yield SelectOverlay(type_to_search=self._type_to_search).data_bind(compact=Select.compact)

    def action_show_overlay(self) -> None:
        if self.disabled or isinstance(self.app.screen, ChoiceList):
            return
        name = f"choice-list-{self.id}"
        if not self.app.is_screen_installed(name):
            self.app.install_screen(ChoiceList(self), name)
        self.app.push_screen(name, self._from_list)

    @on(SelectCurrent.Toggle)
    def _select_current_toggle(self, event: SelectCurrent.Toggle) -> None:
        event.stop()
        self.action_show_overlay()

    def _from_list(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self._options):
            value = self._options[index][1]
            if value != self.value:
                self.value = value
        self.focus()


def _row(label: str, widget) -> Horizontal:
    return Horizontal(Label(label, classes="choice-label"), widget, classes="choice", id=f"row-{widget.id}")


class ChoicesPanel(VerticalScroll):
    class Changed(Message):
        def __init__(self, changes: dict) -> None:
            super().__init__()
            self.changes = changes

    class SchemeChosen(Message):
        def __init__(self, scheme_id: str) -> None:
            super().__init__()
            self.scheme_id = scheme_id

    class Invalid(Message):
        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

    class Committed(Message):
        """Enter planned a typed value: the keys go back to what the user was looking at."""

    def __init__(self, request: PlanRequest, scheme_choices: list[tuple[str, str]], scheme_id: str,
                 handler=None, **kw) -> None:
        super().__init__(**kw)
        self.handler = handler
        self._quiet = False          # the panel is showing the workbench's state: not an edit
        self.request = request
        self.scheme_choices = scheme_choices
        self.scheme_id = scheme_id
        self._by_id = {control_id(o): o for o in CONTROLS}
        self._committed: dict[str, str] = {}     # a typed field's text the request holds (planned)
        self._engine: str | None = None          # the engine whose controls are shown

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        r = self.request
        ids = [v for _, v in model_options()]
        model_value = PATH_CHOICE if (r.model_file or r.model not in ids) else r.model
        path_value = r.model_file or (r.model if model_value == PATH_CHOICE else "")
        for section in SECTIONS:
            yield Label(section, classes="section", id=f"section-{section.lower()}")
            if section == "Model":
                yield _row("model", Choice(model_options(), value=model_value, allow_blank=False, id=MODEL,
                                           compact=True))
                yield _row("path", Input(value=path_value, placeholder="HF folder or .gguf", id=PATH, compact=True))
                yield _row("scheme", Choice(self.scheme_choices, value=self.scheme_id, allow_blank=False, id=SCHEME,
                                            compact=True))
            for o in CONTROLS:
                if o.control.section == section:
                    yield _row(o.control.label, self._widget(o, getattr(r, o.dest)))

    def _widget(self, o: Option, value):
        c = o.control
        wid = control_id(o)
        if c.kind == "flag":
            return Choice(FLAG_OPTIONS, value="on" if value else "off", allow_blank=False, id=wid, compact=True)
        if c.kind == "select":
            opts = control_options(o)
            shown = value if value is not None else opts[0][1]
            if shown not in [v for _, v in opts]:
                opts.append((str(shown), shown))
            return Choice(opts, value=shown, allow_blank=False, id=wid, compact=True)
        typed, restrict = FIELD_KINDS[c.kind]
        self._committed[wid] = o.text(value)
        return FieldInput(typed, restrict, value=o.text(value), placeholder=c.placeholder, id=wid, compact=True)

    # ---------------------------------------------------------------- edits -> messages
    def on_mount(self) -> None:
        # the values the panel itself put there: a Select announces its first value once it is mounted
        self._shown = {sel.id: sel.value for sel in self.query(Select)}
        self.show_engine(self.request.engine)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.chosen(event.select.id, event.value)

    def chosen(self, sid: str | None, v) -> None:
        """A choice has a new value (called by the Choice itself, and again by its Changed message)."""
        if (v is Select.NULL or sid is None or self._quiet or not hasattr(self, "_shown")
                or self._shown.get(sid) == v):
            return
        self._shown[sid] = v
        if sid == SCHEME:
            self._send(self.SchemeChosen(str(v)))
        elif sid == MODEL:
            if v == PATH_CHOICE:
                self.query_one(f"#{PATH}", Input).focus()
                return
            self._send(self.Changed({"model": str(v), "model_file": None}))
        elif sid in self._by_id:
            o = self._by_id[sid]
            if o.control.kind == "flag":
                value = v == "on"
            else:
                value = None if (o.dest == "device" and v == AUTO_DEVICE) else str(v)
            self._send(self.Changed({o.dest: value, **dict(o.control.also)}))

    def _send(self, message: Message) -> None:
        """To the handler the app gave (at once), else as a message."""
        if self.handler is not None:
            self.handler(message)
        else:
            self.post_message(message)

    # A typed value is planned only when it is complete: on Enter, or when the field loses the focus.
    # While it is typed the plan stays as it was and the field is marked as edited (a burst of keys
    # never plans a half-typed 6553); Escape puts the planned value back (ChoicesPanel.revert).
    def on_input_changed(self, event: Input.Changed) -> None:
        iid = event.input.id
        if iid not in self._by_id:
            return
        event.stop()
        event.input.set_class(event.value.strip() != self._committed.get(iid, ""), "edited")

    def on_input_blurred(self, event: Input.Blurred) -> None:
        if event.input.id in self._by_id:
            event.stop()
            self.commit(event.input)

    def is_field(self, widget) -> bool:
        return isinstance(widget, Input) and widget.id in self._by_id

    def commit(self, field: Input) -> bool:
        """Plan the field's value if it changed. False: not a valid value (the error line says why)."""
        o = self._by_id[field.id]
        text = field.value.strip()
        if text == self._committed.get(field.id, ""):
            field.remove_class("edited")
            return True
        if not text and o.control.empty == "keep":
            self.revert(field)             # an emptied field that must hold a value: the planned one
            return True
        try:
            value = (o.to_request(None) if o.to_request else o.default) if not text else o.parse(text)
        except PlannerError as e:
            self._send(self.Invalid(str(e)))
            return False
        self._committed[field.id] = text
        field.remove_class("edited")
        self._send(self.Changed({o.dest: value}))
        return True

    def revert(self, field: Input) -> None:
        """The field shows the planned value again (Escape)."""
        self.set_value(field.id, self._committed.get(field.id, ""))
        field.remove_class("edited")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in self._by_id:
            event.stop()
            if self.commit(event.input):
                self._send(self.Committed())
            return
        if event.input.id != PATH:
            return
        event.stop()
        path = event.value.strip()
        if not path:
            return
        self.set_value(MODEL, PATH_CHOICE)
        if path.lower().endswith(".gguf"):
            self._send(self.Changed({"model_file": path}))
        else:
            self._send(self.Changed({"model": path, "model_file": None}))

    # ---------------------------------------------------------------- state -> widgets (no messages)
    def set_value(self, wid: str, value) -> None:
        w = self.query_one(f"#{wid}")
        if isinstance(w, Select):
            self._shown[wid] = value
        elif wid in self._by_id:
            self._committed[wid] = str(value).strip()
        if w.value == value:
            return
        self._quiet = True
        try:
            with w.prevent(Select.Changed, Input.Changed):
                w.value = value
        finally:
            self._quiet = False

    def set_schemes(self, choices: list[tuple[str, str]], scheme_id: str) -> None:
        sel = self.query_one(f"#{SCHEME}", Select)
        if choices != self.scheme_choices:
            self.scheme_choices = choices
            self._quiet = True
            try:
                with sel.prevent(Select.Changed):
                    sel.set_options(choices)
            finally:
                self._quiet = False
            self._shown[SCHEME] = sel.value
        if any(v == scheme_id for _, v in choices):
            self.set_value(SCHEME, scheme_id)

    def show(self, request: PlanRequest, plan: Plan | None) -> None:
        """What the plan resolved (KV mode, GPU count), without changing the request."""
        self.request = request
        self.show_engine(request.engine)
        kv = self.query_one("#ch-kv_mode", Select)
        if plan is None:
            return
        if kv.disabled != (plan.kv_mode is None):
            kv.disabled = plan.kv_mode is None
        if plan.kv_mode:
            self.set_value("ch-kv_mode", plan.kv_mode)
        gpus = self.query_one("#ch-gpus", Input)
        if plan.hardware is not None:
            ph = f"{plan.hardware.gpus} ({plan.hardware.source})"
            if gpus.placeholder != ph:
                gpus.placeholder = ph

    def show_engine(self, engine_name: str) -> None:
        """Show the controls the engine reads, hide the others (and a section left empty)."""
        if engine_name == self._engine or not self.is_mounted:
            return
        self._engine = engine_name
        hidden = hidden_options(engine_name)
        shown_sections = {"Model"}
        for o in CONTROLS:
            visible = o.dest not in hidden
            self.query_one(f"#row-{control_id(o)}").display = visible
            if visible:
                shown_sections.add(o.control.section)
        for section in SECTIONS:
            self.query_one(f"#section-{section.lower()}").display = section in shown_sections

    def shown_controls(self) -> list[str]:
        """The request fields whose controls are shown."""
        return [o.dest for o in CONTROLS if self.query_one(f"#row-{control_id(o)}").display]

    def label_auto_device(self, label: str) -> None:
        """Name what detection found on the "auto" choice."""
        sel = self.query_one("#ch-device", Select)
        opts = [(label if v == AUTO_DEVICE else lb, v) for lb, v in sel._options]
        if opts == list(sel._options):
            return
        value = sel.value
        self._quiet = True
        try:
            with sel.prevent(Select.Changed):
                sel.set_options(opts)
                sel.value = opts[-1][1] if value == opts[0][1] else opts[0][1]   # the shown label follows
                sel.value = value
        finally:
            self._quiet = False
        self._shown[sel.id] = value


__all__ = ["ChoicesPanel", "FieldInput", "MODEL", "PATH", "SCHEME", "AUTO_MODEL", "control_id"]
