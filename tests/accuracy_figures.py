"""The accuracy figures as the data files give them, read here with csv/tomllib (not through the
planner), so that tests state the world's numbers once: in profiles/accuracy/."""

from __future__ import annotations

import csv
import tomllib
from functools import lru_cache
from pathlib import Path

ACCURACY = Path(__file__).resolve().parents[1] / "profiles" / "accuracy"
SUMMARY = ("average", "weighted_avg", "accuracy_drop")


@lru_cache(maxsize=1)
def rows() -> tuple[dict, ...]:
    out: list[dict] = []
    for path in sorted(ACCURACY.glob("scores-*.csv")):
        with path.open(newline="") as f:
            out += list(csv.DictReader(f))
    return tuple(out)


def column(model: str, scheme: str, table: str | None = None, *, reported: bool = False) -> dict[str, float]:
    """benchmark (and summary row) -> value of the first column of (model, scheme) in the files (in `table`;
    a "reported" column only when asked)."""
    tables = [r["table"] for r in rows() if r["model"] == model and r["scheme"] == scheme
              and (table is None or r["table"] == table) and (reported or r["role"] != "reported")]
    assert tables, (model, scheme, table)
    first = tables[0]
    cols = [r["column"] for r in rows() if r["table"] == first and r["model"] == model and r["scheme"] == scheme
            and (reported or r["role"] != "reported")]
    return {r["benchmark"]: float(r["value"]) for r in rows()
            if r["table"] == first and r["column"] == cols[0] and r["value"]}


def printed(model: str, scheme: str, row: str = "weighted_avg", table: str | None = None) -> float:
    """A printed figure: the paper's weighted average of a scheme, by default."""
    return column(model, scheme, table)[row]


@lru_cache(maxsize=1)
def table8() -> dict[str, float]:
    with (ACCURACY / "benchmarks.csv").open(newline="") as f:
        return {r["benchmark"]: float(r["weight"]) for r in csv.DictReader(f) if r["weight"]}


def task_weights(task: str) -> dict[str, float]:
    t = tomllib.loads((ACCURACY / "tasks.toml").read_text())[task]
    return {b: w * (t.get("factor", 1) if b in t.get("focus", []) else 1) for b, w in table8().items()}


def weighted(model: str, scheme: str, task: str = "general", table: str | None = None) -> float:
    """The task-weighted mean of a column's benchmarks, weights renormalised over those present."""
    col = column(model, scheme, table)
    w = task_weights(task)
    used = [b for b in col if b in w]
    return sum(w[b] * col[b] for b in used) / sum(w[b] for b in used)
