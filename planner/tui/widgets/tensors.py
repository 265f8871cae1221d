"""The tensor table of one scheme (sortable, filterable by name or type) and its bytes per type."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from planner.core.plan import SchemePlan, TensorPlan
from planner.tui.format import shape_text
from planner.units import human

COLUMNS = ("name", "shape", "type", "bytes")


def natural(name: str) -> tuple:
    """blk.4 before blk.12."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


_SORT_KEYS = {
    "name": lambda t: natural(t.name),
    "shape": lambda t: t.shape,
    "type": lambda t: t.type,
    "bytes": lambda t: t.bytes,
}


def matches(t: TensorPlan, terms: list[str]) -> bool:
    """Every term is a substring of the name or equals the type (case-insensitive)."""
    name = t.name.lower()
    typ = t.type.lower()
    return all(term in name or term == typ for term in terms)


def filter_tensors(tensors: list[TensorPlan], query: str) -> list[TensorPlan]:
    terms = [x for x in query.lower().split() if x]
    return [t for t in tensors if matches(t, terms)] if terms else list(tensors)


class TensorTable(DataTable):
    BINDINGS = [Binding("o", "cycle_sort", "Sort by", show=True)]

    def action_cycle_sort(self) -> None:
        view = self.query_ancestor(TensorView)
        i = COLUMNS.index(view.sort_column)
        view.sort_by(COLUMNS[(i + 1) % len(COLUMNS)])


class TensorView(Vertical):
    """Bytes per type on top, then the filter and the tensor table."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._sp: SchemePlan | None = None
        self.sort_column = "bytes"
        self.sort_reverse = True
        self.shown: list[TensorPlan] = []

    def compose(self) -> ComposeResult:
        yield DataTable(id="type-table", cursor_type="none", zebra_stripes=False)
        with Horizontal(id="tensor-filter-row"):
            yield Input(placeholder="filter: name part or type, e.g. ffn_down_exps q4_K", id="tensor-filter",
                        compact=True)
            yield Static("", id="tensor-count")
        yield TensorTable(id="tensor-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        types = self.query_one("#type-table", DataTable)
        types.add_column("type", key="type")
        types.add_column("bytes", key="bytes")
        types.add_column("share", key="share")
        types.add_column("tensors", key="tensors")
        table = self.query_one("#tensor-table", DataTable)
        for c in COLUMNS:
            table.add_column(c, key=c)

    def show(self, sp: SchemePlan | None) -> None:
        self._sp = sp
        types = self.query_one("#type-table", DataTable)
        types.clear()
        if sp is not None:
            counts: dict[str, int] = {}
            for t in sp.tensors:
                counts[t.type] = counts.get(t.type, 0) + 1
            for typ, b in sorted(sp.type_bytes.items(), key=lambda kv: -kv[1]):
                types.add_row(typ, Text(human(b), justify="right"),
                              Text(f"{100 * b / sp.size_bytes:.1f}%", justify="right"),
                              Text(str(counts.get(typ, 0)), justify="right"), key=typ)
        self.refilter()

    def sort_by(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            self.sort_reverse = column == "bytes"
        self.refilter()

    def refilter(self) -> None:
        table = self.query_one("#tensor-table", DataTable)
        query = self.query_one("#tensor-filter", Input).value
        tensors = self._sp.tensors if self._sp is not None else []
        shown = filter_tensors(tensors, query)
        shown.sort(key=_SORT_KEYS["name"])            # ties keep the natural name order
        if self.sort_column != "name" or self.sort_reverse:
            shown.sort(key=_SORT_KEYS[self.sort_column], reverse=self.sort_reverse)
        self.shown = shown
        table.clear()
        table.add_rows(
            (t.name, shape_text(t.shape), t.type, Text(f"{t.bytes:,}", justify="right")) for t in shown)
        for i, c in enumerate(COLUMNS):
            arrow = (" ▼" if self.sort_reverse else " ▲") if c == self.sort_column else ""
            table.columns[c].label = Text(c + arrow)
        total = sum(t.bytes for t in shown)
        self.query_one("#tensor-count", Static).update(
            f"{len(shown)}/{len(tensors)} tensors, {human(total)}")
        table.refresh()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "tensor-filter":
            event.stop()
            self.refilter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "tensor-filter":
            event.stop()
            self.query_one("#tensor-table").focus()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id == "tensor-table":
            event.stop()
            self.sort_by(str(event.column_key.value))
