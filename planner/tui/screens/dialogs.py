"""Forms for the actions: export the plan, save the launch commands, quantize, serve."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


@dataclass
class Field:
    id: str
    label: str
    value: str = ""
    placeholder: str = ""
    required: bool = True


class FormDialog(ModalScreen[dict[str, str] | None]):
    """A titled form; Enter in the last field or the OK button returns the values, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[Field], ok: str, text: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields
        self.ok = ok
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            if self.text:
                with VerticalScroll(id="dialog-text-box"):
                    yield Static(self.text, id="dialog-text", markup=False)
            for f in self.fields:
                with Horizontal(classes="dialog-field"):
                    yield Label(f.label, classes="dialog-label")
                    yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{f.id}", compact=True)
            yield Static("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button(self.ok, id="dialog-ok", variant="primary", compact=True)
                yield Button("Cancel", id="dialog-cancel", compact=True)

    def on_mount(self) -> None:
        if self.fields:
            self.query_one(f"#field-{self.fields[0].id}", Input).focus()
        else:
            self.query_one("#dialog-ok", Button).focus()

    def values(self) -> dict[str, str]:
        return {f.id: self.query_one(f"#field-{f.id}", Input).value.strip() for f in self.fields}

    def show_error(self, message: str) -> None:
        self.query_one("#dialog-error", Static).update(message)

    def _submit(self) -> None:
        vals = self.values()
        missing = [f.label for f in self.fields if f.required and not vals[f.id]]
        if missing:
            self.show_error(f"needed: {', '.join(missing)}")
            return
        self.dismiss(vals)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        ids = [f"field-{f.id}" for f in self.fields]
        i = ids.index(event.input.id) if event.input.id in ids else len(ids) - 1
        if i + 1 < len(ids):
            self.query_one(f"#{ids[i + 1]}", Input).focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "dialog-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
