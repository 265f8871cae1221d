"""Every key of the workbench on one screen (key ?): the footer shows only those that fit its line."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# what the keys do inside a typed field of the choices panel (not app bindings: the field's own)
FIELD_KEYS = [
    ("Enter", "plan the typed value and go back to the tab (a value is planned only when complete)"),
    ("Escape", "put the planned value back and leave the field"),
    ("Tab", "the next field (leaving a field plans its value)"),
]


def keys_table(actions: list[tuple[str, str]]) -> Table:
    """(shown key, what it does) rows, then the typed fields' keys."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for key, title in actions:
        t.add_row(key, title)
    t.add_row("", "")
    t.add_row(Text("In a typed field", style="bold"), "")
    for key, title in FIELD_KEYS:
        t.add_row(key, title)
    return t


class KeysHelp(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q,enter", "close", "Close")]
    DEFAULT_CSS = """
    KeysHelp { align: center middle; }
    KeysHelp > VerticalScroll {
        width: 90%; max-width: 100; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, actions: list[tuple[str, str]]) -> None:
        super().__init__()
        self.actions = actions

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(Text("Keys (Escape or ? closes this)", style="bold"))
            yield Static(keys_table(self.actions), id="keys-table")

    def action_close(self) -> None:
        self.dismiss(None)
