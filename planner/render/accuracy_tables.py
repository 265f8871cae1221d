"""The published accuracy tables of a model as text: printed values, then the rows recomputed from the
per-benchmark values (planner.core.accuracy.tables holds the data and the arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.accuracy import tables as acc


@dataclass
class TableView:
    """A table ready to render: header labels, then rows of strings (printed values, then recomputed)."""

    id: str
    title: str
    source: str
    suite: str
    baseline: str
    columns: list[str]
    schemes: list[str]
    roles: list[str]
    rows: list[tuple[str, list[str]]]
    notes: list[str]
    findings: list[str]


def _fmt_cell(c: acc.Cell | None) -> str:
    if c is None:
        return "-"
    s = c.printed
    if c.std_printed:
        s += f" ±{c.std_printed}"
    if c.recovery_printed:
        s += f" ({c.recovery_printed}%)"
    return s


def table_for(model_id: str, task: str = "general") -> list[TableView]:
    """Every table that measured a model, as printed plus recomputed rows (for the TUI and reports)."""
    d = acc.data()
    views: list[TableView] = []
    for t in acc.tables_of(model_id):
        cols = [m for m in d.measurements if m.table == t.id]
        row_ids: list[str] = []
        for m in cols:
            for b in m.cells:
                if b not in acc.SUMMARY_ROWS and b not in row_ids:
                    row_ids.append(b)
        rows: list[tuple[str, list[str]]] = []
        for b in row_ids + list(acc.SUMMARY_ROWS):
            if b in acc.SUMMARY_ROWS and not any(b in m.cells for m in cols):
                continue
            name = d.benchmarks[b].name if b in d.benchmarks else {
                "average": "Average", "weighted_avg": "Weighted avg.", "accuracy_drop": "Accuracy drop %"}[b]
            rows.append((name, [_fmt_cell(m.cells.get(b)) for m in cols]))

        def num(x: float | None, nd: int = 2) -> str:
            return "-" if x is None else f"{x:.{nd}f}"

        rows.append(("Average (recomputed)", [num(acc.recompute_average(m)) for m in cols]))
        if d.suites[t.suite].rank > 0:
            rows.append(("Weighted, Table 8 (recomputed)", [num(acc.recompute_weighted_avg(m)) for m in cols]))
            if task != "general":
                rows.append((f"Task score: {task}", [num(acc.task_score(m, task)) for m in cols]))
        rows.append(("Drop % (recomputed)", [
            "-" if m.role != "quantized" else num(acc.recompute_drop(m)) for m in cols]))
        notes = list(t.notes) + [f"{c}: {n}" for c, n in t.column_notes.items()]
        views.append(TableView(
            id=t.id, title=t.title, source=t.source, suite=d.suites[t.suite].name, baseline=t.baseline,
            columns=[m.column for m in cols], schemes=[m.scheme for m in cols], roles=[m.role for m in cols],
            rows=rows, notes=notes, findings=[str(f) for f in acc.check_table(t.id)]))
    return views
