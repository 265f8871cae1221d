"""Published accuracy of DeepSeek models per quantization scheme, and task-weighted scores.

Data: profiles/accuracy/
- scores-*.csv: one row per model x scheme x benchmark (plus the printed summary rows `average`,
  `weighted_avg`, `accuracy_drop`), each naming its table and source, values exactly as printed.
- tables.toml: per table its model, evaluation suite, baseline column and how its drop is defined.
- benchmarks.csv: the paper's Table 8 (question counts and the weights of its weighted average).
- tasks.toml: the --task weightings (general = Table 8 exactly; math/code/chinese documented there).

Nothing here invents a figure: a scheme without a row has no accuracy (None). Printed summaries are
kept as printed; the recompute_* functions derive them again from the per-benchmark values, and
check_table() lists every printed figure that the rounding of its inputs cannot explain.

Which measurement speaks for a (model, scheme): rows of role "reported" (DeepSeek's own figures as
the paper quotes them, other protocol, partial) are shown but never used; among the rest, the suite
with the lowest `rank` in tables.toml wins (the paper's nine-benchmark evaluation first, then the
model cards' reasoning benchmarks); suites of rank 0 (Open LLM Leaderboard V1) are shown only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.core.plan import Accuracy
from planner.errors import PlannerError, choices

SUMMARY_ROWS = ("average", "weighted_avg", "accuracy_drop")
ROLES = ("baseline", "reported", "quantized")
DROP_BASES = ("weighted_avg", "average", "recovery")
CSV_COLUMNS = ("table", "model", "scheme", "column", "role", "benchmark", "value", "std", "recovery_pct",
               "source", "verified", "note")
EPS = 1e-9


# --------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Benchmark:
    id: str
    name: str
    questions: int | None
    weight: float | None          # Table 8 weight; None: not one of the paper's benchmarks
    source: str
    note: str = ""


@dataclass(frozen=True)
class Task:
    id: str
    description: str
    focus: tuple[str, ...]
    factor: float
    weights: dict[str, float] = field(hash=False, compare=False)


@dataclass(frozen=True)
class Suite:
    id: str
    name: str
    protocol: str
    rank: int                     # ranking priority; 0: shown, never ranked


@dataclass(frozen=True)
class TableInfo:
    id: str
    model: str
    suite: str
    title: str
    source: str
    baseline: str                 # the baseline's column label
    drop_basis: str               # weighted_avg | average | recovery
    notes: tuple[str, ...] = ()
    column_notes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Cell:
    """One printed figure: the value, its ± std and the recovery % a card prints next to it."""

    printed: str
    value: float
    std_printed: str = ""
    std: float | None = None
    recovery_printed: str = ""
    recovery_pct: float | None = None
    note: str = ""
    source: str = ""
    verified: str = ""

    @property
    def half_ulp(self) -> float:
        """Half a unit in the last printed digit: how far rounding may have moved the value."""
        return _half_ulp(self.printed)


@dataclass(frozen=True)
class Measurement:
    """One column of one table: a model in one format, measured by one source."""

    table: str
    model: str
    scheme: str
    column: str                   # the column label as printed
    role: str                     # baseline | reported | quantized
    suite: str
    source: str                   # the table's source ("arXiv 2505.02390 Table 2")
    cells: dict[str, Cell] = field(hash=False, compare=False)

    @property
    def scores(self) -> dict[str, float]:
        """Per-benchmark means (summary rows excluded), in the table's row order."""
        return {b: c.value for b, c in self.cells.items() if b not in SUMMARY_ROWS}

    @property
    def stds(self) -> dict[str, float]:
        return {b: c.std for b, c in self.cells.items() if b not in SUMMARY_ROWS and c.std is not None}

    def _printed(self, row: str) -> float | None:
        c = self.cells.get(row)
        return c.value if c else None

    @property
    def average(self) -> float | None:
        return self._printed("average")

    @property
    def weighted_avg(self) -> float | None:
        return self._printed("weighted_avg")

    @property
    def printed_drop(self) -> float | None:
        return self._printed("accuracy_drop")

    @property
    def label(self) -> str:
        return f"{self.table}/{self.column}"


@dataclass
class AccuracyData:
    benchmarks: dict[str, Benchmark]
    tasks: dict[str, Task]
    suites: dict[str, Suite]
    tables: dict[str, TableInfo]
    measurements: list[Measurement]
    # (model, scheme, task) -> its scored view, made once from this data (planner.core.accuracy.scores)
    views: dict = field(default_factory=dict, repr=False, compare=False)


def _half_ulp(printed: str) -> float:
    s = printed.strip()
    if "." not in s:
        return 0.5
    return 0.5 * 10.0 ** -(len(s) - s.index(".") - 1)


def _float(s: str, where: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise PlannerError(f"{where}: '{s}' is not a number") from None


def _load_benchmarks(path: Path) -> dict[str, Benchmark]:
    out: dict[str, Benchmark] = {}
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            where = f"{path}:{i}"
            bid = row.get("benchmark") or ""
            if not bid:
                raise PlannerError(f"{where}: empty benchmark id")
            out[bid] = Benchmark(
                id=bid, name=row.get("name") or bid,
                questions=int(row["questions"]) if row.get("questions") else None,
                weight=_float(row["weight"], where) if row.get("weight") else None,
                source=row.get("source") or "", note=row.get("note") or "")
    return out


def _load_tasks(path: Path, benchmarks: dict[str, Benchmark]) -> dict[str, Task]:
    data = read_toml(path, "accuracy data")
    table8 = {b.id: b.weight for b in benchmarks.values() if b.weight is not None}
    out: dict[str, Task] = {}
    for tid, t in data.items():
        focus = tuple(t.get("focus", ()))
        unknown = [b for b in focus if b not in table8]
        if unknown:
            raise PlannerError(f"{path}: task {tid} focuses on {unknown}, not Table 8 benchmarks ({choices(table8)})")
        factor = float(t.get("factor", 1))
        weights = {b: w * (factor if b in focus else 1.0) for b, w in table8.items()}
        out[tid] = Task(id=tid, description=t.get("description", ""), focus=focus, factor=factor, weights=weights)
    if "general" not in out:
        raise PlannerError(f"{path}: no [general] task")
    return out


def _load_tables(path: Path) -> tuple[dict[str, Suite], dict[str, TableInfo]]:
    data = read_toml(path, "accuracy data")
    suites = {sid: Suite(id=sid, name=s["name"], protocol=s.get("protocol", ""), rank=int(s.get("rank", 0)))
              for sid, s in data.get("suites", {}).items()}
    tables: dict[str, TableInfo] = {}
    for tid, t in data.get("tables", {}).items():
        for key in ("model", "suite", "title", "source", "baseline", "drop_basis"):
            if key not in t:
                raise PlannerError(f"{path}: table {tid} is missing '{key}'")
        if t["suite"] not in suites:
            raise PlannerError(f"{path}: table {tid}: unknown suite '{t['suite']}'; valid: {choices(suites)}")
        if t["drop_basis"] not in DROP_BASES:
            raise PlannerError(f"{path}: table {tid}: drop_basis must be one of {', '.join(DROP_BASES)}")
        tables[tid] = TableInfo(id=tid, model=t["model"], suite=t["suite"], title=t["title"], source=t["source"],
                                baseline=t["baseline"], drop_basis=t["drop_basis"],
                                notes=tuple(t.get("notes", ())), column_notes=dict(t.get("column_notes", {})))
    return suites, tables


def _load_scores(paths: list[Path], tables: dict[str, TableInfo],
                 benchmarks: dict[str, Benchmark]) -> list[Measurement]:
    cols: dict[tuple[str, str], dict] = {}
    for path in paths:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise PlannerError(f"{path}: header must be {','.join(CSV_COLUMNS)}")
            for i, row in enumerate(reader, start=2):
                where = f"{path}:{i}"
                tid = row["table"]
                if tid not in tables:
                    raise PlannerError(f"{where}: unknown table '{tid}' (not in tables.toml)")
                t = tables[tid]
                if row["model"] != t.model:
                    raise PlannerError(f"{where}: model '{row['model']}' but table {tid} is of {t.model}")
                if row["role"] not in ROLES:
                    raise PlannerError(f"{where}: role must be one of {', '.join(ROLES)}")
                b = row["benchmark"]
                if b not in benchmarks and b not in SUMMARY_ROWS:
                    raise PlannerError(f"{where}: unknown benchmark '{b}'; valid: {choices(list(benchmarks) + list(SUMMARY_ROWS))}")
                if not row["source"]:
                    raise PlannerError(f"{where}: every row must name its source")
                key = (tid, row["column"])
                col = cols.setdefault(key, {"model": row["model"], "scheme": row["scheme"], "role": row["role"],
                                            "cells": {}})
                if (col["scheme"], col["role"]) != (row["scheme"], row["role"]):
                    raise PlannerError(f"{where}: column '{row['column']}' of {tid} changes scheme or role")
                if b in col["cells"]:
                    raise PlannerError(f"{where}: {tid} '{row['column']}' {b} given twice")
                col["cells"][b] = Cell(
                    printed=row["value"], value=_float(row["value"], where),
                    std_printed=row["std"], std=_float(row["std"], where) if row["std"] else None,
                    recovery_printed=row["recovery_pct"],
                    recovery_pct=_float(row["recovery_pct"], where) if row["recovery_pct"] else None,
                    note=row["note"], source=row["source"], verified=row["verified"])
    out = [Measurement(table=tid, model=c["model"], scheme=c["scheme"], column=label, role=c["role"],
                       suite=tables[tid].suite, source=tables[tid].source, cells=c["cells"])
           for (tid, label), c in cols.items()]
    for tid, t in tables.items():
        base = [m for m in out if m.table == tid and m.column == t.baseline]
        if len(base) != 1 or base[0].role != "baseline":
            raise PlannerError(f"tables.toml: table {tid}: baseline column '{t.baseline}' is not one baseline column of the scores")
    return out


@lru_cache(maxsize=4)
def _load(root: str) -> AccuracyData:
    d = Path(root)
    benchmarks = _load_benchmarks(d / "benchmarks.csv")
    tasks = _load_tasks(d / "tasks.toml", benchmarks)
    suites, tables = _load_tables(d / "tables.toml")
    ms = _load_scores(sorted(d.glob("scores-*.csv")), tables, benchmarks)
    return AccuracyData(benchmarks=benchmarks, tasks=tasks, suites=suites, tables=tables, measurements=ms)


def data() -> AccuracyData:
    """Everything in profiles/accuracy/, validated (a malformed file is a PlannerError naming it)."""
    return _load(str(profiles_dir() / "accuracy"))


# --------------------------------------------------------------------------------------------- tasks

def task_ids() -> list[str]:
    return list(data().tasks)


def get_task(task: str) -> Task:
    tasks = data().tasks
    if task not in tasks:
        raise PlannerError(f"unknown --task '{task}'; valid: {', '.join(tasks)}")
    return tasks[task]


def task_weights(task: str = "general") -> dict[str, float]:
    """Benchmark -> weight for a task; `general` is Table 8 exactly."""
    return dict(get_task(task).weights)


def task_benchmarks_used(m: Measurement, task: str = "general") -> list[str]:
    """The benchmarks of `m` that count towards the task score (those with a weight)."""
    w = get_task(task).weights
    return [b for b in m.scores if b in w]


def task_score(m: Measurement, task: str = "general") -> float | None:
    """Task-weighted mean of a measurement's benchmarks (weights renormalised over those present).

    For `general` on a column with all nine Table 8 benchmarks this is the paper's printed weighted
    average (the paper's own figure; tests check that the recomputed value agrees to rounding).
    None when no weighted benchmark is present, or when a focused task finds none of its focus
    benchmarks (AIME/MATH/GPQA-only cards have no code score).
    """
    t = get_task(task)
    used = task_benchmarks_used(m, task)
    if not used:
        return None
    if t.focus and not any(b in t.focus for b in used):
        return None
    if task == "general" and m.weighted_avg is not None and set(used) == set(t.weights):
        return m.weighted_avg
    return recompute_weighted_avg(m, task)


# --------------------------------------------------------------------------------------------- lookup

def tables_of(model_id: str) -> list[TableInfo]:
    return [t for t in data().tables.values() if t.model == model_id]


def measurements(model_id: str, scheme_id: str | None = None, *, rankable: bool = False) -> list[Measurement]:
    """Columns for a model (and scheme). rankable=True: only those that may rank, best suite first."""
    d = data()
    out = [m for m in d.measurements
           if m.model == model_id and (scheme_id is None or m.scheme == scheme_id)]
    if rankable:
        out = [m for m in out if m.role != "reported" and d.suites[m.suite].rank > 0]
        out.sort(key=lambda m: d.suites[m.suite].rank)
    return out


def measurement_for(model_id: str, scheme_id: str, suite: str | None = None) -> Measurement | None:
    """The measurement that speaks for (model, scheme): best-ranked suite, or the given suite."""
    for m in measurements(model_id, scheme_id, rankable=True):
        if suite is None or m.suite == suite:
            return m
    return None


def baseline_of(m: Measurement) -> Measurement:
    t = data().tables[m.table]
    return next(x for x in data().measurements if x.table == m.table and x.column == t.baseline)


def models_with_accuracy() -> list[str]:
    """Catalog ids with at least one measurement that can rank (the --model auto candidates)."""
    seen: list[str] = []
    for m in data().measurements:
        if m.model not in seen and measurement_for(m.model, m.scheme) is not None:
            seen.append(m.model)
    return seen


def schemes_with_accuracy(model_id: str) -> list[str]:
    out: list[str] = []
    for m in measurements(model_id, rankable=True):
        if m.scheme not in out:
            out.append(m.scheme)
    return out


def drop_pct(m: Measurement) -> float | None:
    """The table's drop for `m` as printed (paper); for model cards 100 - printed recovery, floored at 0
    like the paper's 0 for schemes above their baseline. None for the baseline itself."""
    if m.role == "baseline":
        return None
    if m.printed_drop is not None:
        return m.printed_drop
    avg = m.cells.get("average")
    if avg is not None and avg.recovery_pct is not None:
        return round(max(0.0, 100.0 - avg.recovery_pct), 2)
    return None


def baseline_label(base: Measurement) -> str:
    """'FP8 (Official API)', 'BF16 (Local Evaluation)', 'BF16': the scheme id, then the column if it says more."""
    if base.column.startswith(base.scheme):
        return base.column
    return f"{base.scheme} ({base.column})"


def cite(m: Measurement) -> str:
    """How a reason names the figure's origin: "arXiv 2505.02390 Table 2, column 'Q4_K_M (llama.cpp)'"."""
    return f"{m.source}, column '{m.column}'"


def accuracy_for(model_id: str, scheme_id: str, task: str = "general") -> Accuracy | None:
    """The published accuracy of a scheme of a model, or None when nothing was measured.

    weighted_avg/average/drop_pct are the source's printed figures (weighted_avg only where the
    paper prints one); per_benchmark the printed means; task_score the task-weighted score.
    """
    get_task(task)
    m = measurement_for(model_id, scheme_id)
    if m is None:
        return None
    base = baseline_of(m)
    return Accuracy(
        weighted_avg=m.weighted_avg,
        average=m.average,
        drop_pct=drop_pct(m),
        per_benchmark=dict(m.scores),
        source=cite(m),
        baseline=baseline_label(base),
        task_score=task_score(m, task),
    )


@dataclass(frozen=True)
class Proxy:
    """A measured model's figure shown for an unmeasured one (profiles/accuracy/proxies.toml): labelled as a
    proxy, never ranked, never an `Accuracy` of the planned model."""

    model: str                    # the planned model
    measured_model: str           # the model the figure was measured on
    accuracy: Accuracy            # that model's measurement of the scheme
    why: str

    @property
    def label(self) -> str:
        a = self.accuracy
        score = f"{a.weighted_avg:.2f} weighted" if a.weighted_avg is not None else (
            f"{a.task_score:.2f}" if a.task_score is not None else "no general score")
        drop = f", {a.drop_pct:.2f}% below {a.baseline}" if a.drop_pct is not None else ""
        return (f"accuracy proxy, not a measurement of {self.model}: {self.measured_model} scores {score}"
                f"{drop} ({a.source}); {self.why}")


@lru_cache(maxsize=4)
def _proxies(root: str) -> dict[str, tuple[tuple[str, ...], str]]:
    path = Path(root) / "proxies.toml"
    if not path.is_file():
        return {}
    out = {}
    for mid, e in read_toml(path, "accuracy proxies").get("models", {}).items():
        if not isinstance(e, dict) or not isinstance(e.get("proxy"), list) or not e["proxy"] or "why" not in e:
            raise PlannerError(f"{path}: model {mid} needs a non-empty 'proxy' list and 'why'")
        out[mid] = (tuple(str(x) for x in e["proxy"]), str(e["why"]))
    return out


def proxy_for(model_id: str, scheme_id: str, task: str = "general") -> Proxy | None:
    """The labelled proxy shown for (model, scheme) when the model itself has no measurement of the
    scheme: the first of its proxy models (proxies.toml) that measured the same scheme id."""
    if measurement_for(model_id, scheme_id) is not None:
        return None
    entry = _proxies(str(profiles_dir() / "accuracy")).get(model_id)
    if entry is None:
        return None
    for other in entry[0]:
        m = measurement_for(other, scheme_id)
        if m is None or m.role != "quantized":     # a baseline says nothing about quantization
            continue
        a = accuracy_for(other, scheme_id, task)
        if a is not None and (a.weighted_avg is not None or a.task_score is not None):
            return Proxy(model=model_id, measured_model=other, accuracy=a, why=entry[1])
    return None


# --------------------------------------------------------------------------------------------- recompute

def recompute_average(m: Measurement) -> float | None:
    """Unweighted mean of the per-benchmark values (what the tables call 'Average')."""
    s = m.scores
    return sum(s.values()) / len(s) if s else None


def recompute_weighted_avg(m: Measurement, task: str = "general") -> float | None:
    """Weighted mean with the task's weights (general: Table 8) over the benchmarks present."""
    w = get_task(task).weights
    used = [b for b in m.scores if b in w]
    if not used:
        return None
    return sum(w[b] * m.scores[b] for b in used) / sum(w[b] for b in used)


def recompute_drop(m: Measurement, basis: str | None = None) -> float | None:
    """Relative decrease (%) against the table's baseline, from the printed summaries; negative when
    above the baseline (the paper prints 0 there). basis: weighted_avg | average | recovery
    (default: the table's own drop_basis)."""
    basis = basis or data().tables[m.table].drop_basis
    if basis == "recovery":
        avg = m.cells.get("average")
        if avg is None or avg.recovery_pct is None:
            basis = "average"
        else:
            return 100.0 - avg.recovery_pct
    base = baseline_of(m)
    a, b = getattr(m, basis), getattr(base, basis)
    if a is None or b is None or b == 0:
        return None
    return (b - a) / b * 100.0


# --------------------------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class Finding:
    """A printed figure that the rounding of the figures it derives from cannot explain."""

    table: str
    column: str
    row: str                      # average | weighted_avg | accuracy_drop | <benchmark> (recovery)
    printed: float
    recomputed: float
    low: float                    # the interval rounding allows
    high: float

    def __str__(self) -> str:
        return (f"{self.table} '{self.column}' {self.row}: printed {self.printed:g}, recomputed "
                f"{self.recomputed:.3f} (rounding allows {self.low:.3f}..{self.high:.3f})")


def _mean_interval(vals: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """(weight, value, half_ulp) -> (mean, low, high) of the weighted mean over rounding intervals."""
    wsum = sum(w for w, _, _ in vals)
    mean = sum(w * v for w, v, _ in vals) / wsum
    lo = sum(w * (v - h) for w, v, h in vals) / wsum
    hi = sum(w * (v + h) for w, v, h in vals) / wsum
    return mean, lo, hi


def _ratio_interval(num: Cell, den: Cell) -> tuple[float, float, float]:
    """100*num/den and its rounding interval."""
    n, dn, hn, hd = num.value, den.value, num.half_ulp, den.half_ulp
    return 100.0 * n / dn, 100.0 * (n - hn) / (dn + hd), 100.0 * (n + hn) / (dn - hd)


def _drop_interval(m: Cell, b: Cell) -> tuple[float, float, float]:
    """100*(b-m)/b and its rounding interval (floored at 0 as the paper prints)."""
    v = 100.0 * (b.value - m.value) / b.value
    lo = 100.0 * ((b.value - b.half_ulp) - (m.value + m.half_ulp)) / (b.value - b.half_ulp)
    hi = 100.0 * ((b.value + b.half_ulp) - (m.value - m.half_ulp)) / (b.value + b.half_ulp)
    return v, max(lo, 0.0), max(hi, 0.0)


def _outside(printed: Cell, lo: float, hi: float) -> bool:
    return printed.value + printed.half_ulp < lo - EPS or printed.value - printed.half_ulp > hi + EPS


def check_table(table_id: str) -> list[Finding]:
    """Every printed average, weighted average, drop and recovery of a table that does not follow from
    its inputs within their printed rounding (each input is taken as the interval its digits allow)."""
    d = data()
    t = d.tables[table_id]
    general = d.tasks["general"].weights
    cols = [m for m in d.measurements if m.table == table_id]
    base = baseline_of(cols[0])
    out: list[Finding] = []
    for m in cols:
        bench = [(b, c) for b, c in m.cells.items() if b not in SUMMARY_ROWS]
        avg = m.cells.get("average")
        if avg is not None and bench:
            v, lo, hi = _mean_interval([(1.0, c.value, c.half_ulp) for _, c in bench])
            if _outside(avg, lo, hi):
                out.append(Finding(table_id, m.column, "average", avg.value, v, lo, hi))
        wavg = m.cells.get("weighted_avg")
        if wavg is not None:
            v, lo, hi = _mean_interval([(general[b], c.value, c.half_ulp) for b, c in bench if b in general])
            if _outside(wavg, lo, hi):
                out.append(Finding(table_id, m.column, "weighted_avg", wavg.value, v, lo, hi))
        drop = m.cells.get("accuracy_drop")
        if drop is not None and m.role != "baseline":
            basis = "average" if t.drop_basis == "recovery" else t.drop_basis
            mc, bc = m.cells.get(basis), base.cells.get(basis)
            if mc is not None and bc is not None:
                v, lo, hi = _drop_interval(mc, bc)
                if _outside(drop, lo, hi):
                    out.append(Finding(table_id, m.column, "accuracy_drop", drop.value, max(v, 0.0), lo, hi))
        if m.role != "baseline":
            for b, c in m.cells.items():
                if c.recovery_pct is None or b not in base.cells:
                    continue
                v, lo, hi = _ratio_interval(c, base.cells[b])
                rec = Cell(printed=c.recovery_printed, value=c.recovery_pct)
                if _outside(rec, lo, hi):
                    out.append(Finding(table_id, m.column, f"{b} recovery", c.recovery_pct, v, lo, hi))
    return out


def check_all() -> list[Finding]:
    return [f for tid in data().tables for f in check_table(tid)]
