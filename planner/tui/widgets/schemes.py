"""The Schemes tab (every scheme of the plan side by side) and the Accuracy tab (the model's measured
table). Both are filled once per plan of every scheme; a change of selection only moves the marks."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from planner.core.plan import Plan
from planner.tui.format import fullest_device
from planner.units import GiB, human
from planner.workbench import FILE

SCHEME_COLUMNS = ("", "scheme", "GiB", "bpw", "fullest dev.", "headroom", "fits", "w. acc.")


def _num(v: float | None) -> Text:
    return Text("-" if v is None else f"{v:.2f}", justify="right")


class SchemesView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="schemes-note")
        yield DataTable(id="scheme-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        for c in SCHEME_COLUMNS:
            t.add_column(c)
        self._rec: str | None = None
        self._selected: str | None = None

    def show(self, plan: Plan | None, error: str | None, selected: str) -> None:
        note = self.query_one("#schemes-note", Static)
        table = self.query_one(DataTable)
        table.clear()
        if plan is None:
            note.update(Text(f"Could not plan every scheme: {error}" if error else "Planning every scheme...",
                             style="italic"))
            return
        self._rec = plan.recommendation.scheme if plan.recommendation else None
        note.update(Text("Enter: use the scheme under the cursor.  ★ recommended  ▶ selected", style="dim"))
        for s in plan.schemes:
            full = fullest_device(s)
            acc = s.accuracy.weighted_avg if s.accuracy and s.accuracy.weighted_avg is not None else None
            fits = "-" if s.fits is None else ("yes" if s.fits else "NO")
            key = FILE if s.kind == "file" else s.id
            table.add_row(
                self._mark(key, selected), f"{s.id} (this file)" if s.kind == "file" else s.id,
                Text(f"{s.size_bytes / GiB:.2f}", justify="right"), Text(f"{s.bpw:.2f}", justify="right"),
                Text(human(full.total_bytes) if full else "-", justify="right"),
                Text(human(s.headroom_bytes) if s.headroom_bytes is not None else "-", justify="right"),
                Text(fits, style="green" if s.fits else ("red" if s.fits is False else "")),
                Text(f"{acc:.2f}" if acc is not None else ("unmeasured" if s.accuracy else "-"), justify="right"),
                key=key)
        self._selected = selected

    def _mark(self, key: str, selected: str) -> str:
        return ("▶" if key == selected else "") + ("★" if key == self._rec else "")

    def select(self, selected: str) -> None:
        """Move the ▶ mark (the rows stay as they are)."""
        table = self.query_one(DataTable)
        if not table.row_count or selected == self._selected:
            return
        col = table.ordered_columns[0].key
        for key in (self._selected, selected):
            if key is not None and key in table.rows:
                table.update_cell(key, col, self._mark(key, selected))
        self._selected = selected


class AccuracyView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="accuracy-note")
        yield DataTable(id="accuracy-table", cursor_type="row", zebra_stripes=True)

    def show(self, plan: Plan | None, pending: bool) -> None:
        note = self.query_one("#accuracy-note", Static)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        if plan is None:
            note.update(Text("Planning every scheme..." if pending else "No plan.", style="italic"))
            return
        rows = [s for s in plan.schemes if s.accuracy is not None]
        if not rows:
            note.update(Text(f"No accuracy figures for {plan.model.id} in this plan (the model has no measured "
                             "scheme).", style="italic"))
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
            table.add_row(s.id, *[_num(a.per_benchmark.get(b)) for b in benches], _num(a.average),
                          _num(a.weighted_avg), _num(a.drop_pct), key=s.id)
