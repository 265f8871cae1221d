"""The Schemes tab (every scheme of the plan side by side) and the Accuracy tab (the model's measured
table). Both are filled once per plan of every scheme; a change of selection only moves the marks.

The columns that decide come first (fit, accuracy, predicted speed), so that they stay in view at 80x24;
the rest follow (the table scrolls sideways). The accuracy column is the command line's
(planner.render.table.accuracy_column); the prompt and depth of the speeds are said above the table."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from planner.core.plan import Plan
from planner.render.recommendation import accuracy_basis, plan_notes
from planner.render.table import accuracy_column
from planner.tui.format import fullest_device
from planner.units import GiB, human
from planner.workbench import FILE

# the accuracy column's header is the command line's ("accuracy" or "weighted acc."), set per plan
SCHEME_COLUMNS = ("", "scheme", "GiB", "fits", "accuracy", "decode", "prefill", "headroom", "tightest dev.", "bpw",
                  "cpu-moe")


def _num(v: float | None) -> Text:
    return Text("-" if v is None else f"{v:.2f}", justify="right")


class SchemesView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="schemes-note")
        yield DataTable(id="scheme-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="schemes-basis")

    def on_mount(self) -> None:
        self._rec: str | None = None
        self._selected: str | None = None

    def show(self, plan: Plan | None, error: str | None, selected: str) -> None:
        note = self.query_one("#schemes-note", Static)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        if plan is None:
            note.update(Text(f"Could not plan every scheme: {error}" if error else "Planning every scheme...",
                             style="italic"))
            return
        basis = self.query_one("#schemes-basis", Static)
        basis.update("")
        self._rec = plan.recommendation.scheme if plan.recommendation else None
        acc = accuracy_column(plan)
        speed = next((s.speed for s in plan.schemes if s.speed is not None), None)
        hybrid = any(s.n_cpu_moe is not None for s in plan.schemes)
        text = "Enter: use the row.  ★ recommended  ▶ selected."
        if speed is not None:
            text += (f"  tok/s predicted: decode at depth {speed.depth_tokens}, prefill of {speed.prompt_tokens} "
                     "prompt tokens.")
        note.update(Text(text, style="dim"))
        if acc is not None and acc[0] == "accuracy":
            basis.update(Text(accuracy_basis(plan.recommendation), style="dim"))
        columns = [c for c in SCHEME_COLUMNS if (c != "accuracy" or acc is not None)
                   and (c not in ("decode", "prefill") or speed is not None) and (c != "cpu-moe" or hybrid)]
        table.add_columns(*[acc[0] if c == "accuracy" else c for c in columns])
        for i, s in enumerate(plan.schemes):
            full = fullest_device(s)
            fits = "-" if s.fits is None else ("yes" if s.fits else "NO")
            key = FILE if s.kind == "file" else s.id
            sp = s.speed
            cells = {
                "": self._mark(key, selected), "scheme": f"{s.id} (this file)" if s.kind == "file" else s.id,
                "GiB": Text(f"{s.size_bytes / GiB:.2f}", justify="right"),
                "fits": Text(fits, style="green" if s.fits else ("red" if s.fits is False else "")),
                "accuracy": Text(acc[1][i], justify="right") if acc is not None else "",
                "decode": Text(f"{sp.decode_tps:.1f}" if sp else "-", justify="right"),
                "prefill": Text(f"{sp.prefill_tps:.1f}" if sp else "-", justify="right"),
                "headroom": Text(human(s.headroom_bytes) if s.headroom_bytes is not None else "-", justify="right"),
                "tightest dev.": Text(human(full.total_bytes) if full else "-", justify="right"),
                "bpw": Text(f"{s.bpw:.2f}", justify="right"),
                "cpu-moe": Text(str(s.n_cpu_moe) if s.n_cpu_moe is not None else "-", justify="right"),
            }
            table.add_row(*[cells[c] for c in columns], key=key)
        self._selected = selected
        self._cursor_to(selected)

    def _cursor_to(self, key: str) -> None:
        """The cursor on the selected scheme's row (brought into view when the tab is shown: reveal)."""
        table = self.query_one(DataTable)
        if key in table.rows:
            # set without the watcher, which scrolls at once, also while the tab is hidden and has no height
            table.set_reactive(DataTable.cursor_coordinate, Coordinate(table.get_row_index(key), 0))
            table.refresh()
            self.call_after_refresh(self.reveal)

    def reveal(self) -> None:
        """Scroll the selected scheme's row into view (the tab is shown and laid out)."""
        table = self.query_one(DataTable)
        view = table.size.height - (table.header_height if table.show_header else 0)
        row, top = table.cursor_row, int(table.scroll_y)
        if table.row_count and view > 0 and not top <= row < top + view:    # rows are one line each
            table.scroll_to(y=max(0, row - view // 2), animate=False)

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
        self._cursor_to(selected)


class AccuracyView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="accuracy-note")
        yield DataTable(id="accuracy-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="accuracy-sources")

    def show(self, plan: Plan | None, pending: bool) -> None:
        note = self.query_one("#accuracy-note", Static)
        sources_line = self.query_one("#accuracy-sources", Static)
        sources_line.update("")
        table = self.query_one(DataTable)
        table.clear(columns=True)
        if plan is None:
            note.update(Text("Planning every scheme..." if pending else "No plan.", style="italic"))
            return
        rows = [s for s in plan.schemes if s.accuracy is not None]
        if not rows:
            # the plan's notes as the command line prints them (an accuracy proxy, where one is shown)
            text = Text(f"No accuracy figures for {plan.model.id} in this plan (the model has no measured "
                        "scheme).", style="italic")
            for n in plan_notes(plan):
                text.append(f"\n\nnote: {n}", style="")
            note.update(text)
            return
        sources = sorted({s.accuracy.source for s in rows if s.accuracy.source})
        note.update(Text(f"{plan.model.name}: measured accuracy (sources below the table)", style="dim"))
        sources_line.update(Text(f"Sources: {'; '.join(sources)}", style="dim"))
        benches: list[str] = []
        for s in rows:
            for b in s.accuracy.per_benchmark:
                if b not in benches:
                    benches.append(b)
        # the summary columns first, so that they stay in view at 80x24; then one per benchmark
        table.add_columns("scheme", "weighted", "avg", "drop %", *benches)
        for s in rows:
            a = s.accuracy
            table.add_row(s.id, _num(a.weighted_avg), _num(a.average), _num(a.drop_pct),
                          *[_num(a.per_benchmark.get(b)) for b in benches], key=s.id)
