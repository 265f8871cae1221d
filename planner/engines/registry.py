"""The engines dq-planner plans for, by --engine id. Each engine is one module exposing ENGINE_IMPL, an
object implementing planner.core.engine.Engine; adding an engine is adding its module to ENGINE_MODULES.
Nothing else in dq-planner names an engine: callers ask this registry."""

from __future__ import annotations

import importlib
from functools import lru_cache

from planner.core.engine import Engine
from planner.errors import PlannerError

# --engine id -> the module that implements it (imported on first use: the headless path stays fast)
ENGINE_MODULES = {
    "llama.cpp": "planner.engines.llamacpp.engine",
    "vllm": "planner.engines.vllm",
    "sglang": "planner.engines.sglang",
}
DEFAULT_ENGINE = "llama.cpp"


def engine_names() -> tuple[str, ...]:
    return tuple(ENGINE_MODULES)


@lru_cache(maxsize=None)
def engine(name: str) -> Engine:
    """The engine of an --engine id (PlannerError for an unknown one)."""
    mod = ENGINE_MODULES.get(name)
    if mod is None:
        raise PlannerError(f"unknown engine '{name}'; valid: {', '.join(ENGINE_MODULES)}")
    impl = importlib.import_module(mod).ENGINE_IMPL
    assert impl.name == name, (impl.name, name)
    return impl
