"""What the TUI offers beyond the option schema (planner/options.py): the models to pick from, and
writing the files it exports. Nothing here sizes anything."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from planner.core.catalog import model_ids
from planner.errors import PlannerError
from planner.options import AUTO as AUTO_DEVICE
from planner.workbench import AUTO_MODEL

PATH_CHOICE = "__path__"

__all__ = ["AUTO_DEVICE", "AUTO_MODEL", "PATH_CHOICE", "model_options", "default_gguf_name", "write_new_file",
           "hidden_options"]


def model_options() -> list[tuple[str, str]]:
    # sorted by id, so that a name comes before its longer variants (deepseek-r1, then deepseek-r1-0528)
    return ([(m, m) for m in sorted(model_ids())] + [("auto: every measured model", AUTO_MODEL),
                                                       ("local path...", PATH_CHOICE)])


def hidden_options(engine_name: str) -> frozenset[str]:
    """The plan options (request fields) whose controls are hidden for an engine: those other engines read
    and this one does not (Engine.own_options), e.g. llama.cpp's placement for vLLM."""
    from planner.engines.registry import engine, engine_names

    try:
        own = engine(engine_name).own_options
    except PlannerError:
        return frozenset()
    every = frozenset().union(*(engine(n).own_options for n in engine_names()))
    return every - own


def default_gguf_name(model: str, scheme: str) -> str:
    return f"{Path(model).name}-{scheme}.gguf"


def write_new_file(path: str | Path, text: str) -> Path:
    """Write `text` to a new file: never overwrites, never leaves a half-written file behind."""
    p = Path(path).expanduser()
    if p.exists():
        raise PlannerError(f"{p} already exists; choose another name")
    if not p.parent.is_dir():
        raise PlannerError(f"{p.parent} is not a folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)          # atomic, and fails if the name was taken meanwhile
        except FileExistsError:
            raise PlannerError(f"{p} already exists; choose another name") from None
        except OSError:
            if p.exists():
                raise PlannerError(f"{p} already exists; choose another name") from None
            os.replace(tmp, p)       # filesystems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
