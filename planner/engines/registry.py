"""The engines dq-planner plans for, by --engine id. Each engine is one module exposing ENGINE_IMPL, an
object implementing planner.core.engine.Engine; the ids and their modules are listed in
planner/engine_ids.py (ENGINE_MODULES). Nothing else in dq-planner names an engine: callers ask this
registry."""

from __future__ import annotations

import importlib
from functools import lru_cache

from planner.core.engine import Engine
from planner.engine_ids import ENGINE_MODULES, engine_names  # noqa: F401  (re-exported)
from planner.errors import PlannerError


@lru_cache(maxsize=None)
def engine(name: str) -> Engine:
    """The engine of an --engine id (PlannerError for an unknown one)."""
    mod = ENGINE_MODULES.get(name)
    if mod is None:
        raise PlannerError(f"unknown engine '{name}'; valid: {', '.join(ENGINE_MODULES)}")
    impl = importlib.import_module(mod).ENGINE_IMPL
    assert impl.name == name, (impl.name, name)
    return impl
