"""The engines dq-planner plans for, by --engine id. Each engine is one module exposing ENGINE_IMPL, an
object implementing planner.core.engine.Engine; the ids and their modules are listed in
planner/engine_ids.py (ENGINE_MODULES). Nothing else in dq-planner names an engine: callers ask this
registry."""

from __future__ import annotations

import importlib
from functools import lru_cache

from planner.core.engine import CommandRequest, Engine
from planner.core.plan import PlanRequest
from planner.engine_ids import ENGINE_MODULES, engine_names  # noqa: F401  (re-exported)
from planner.errors import PlannerError
from planner.safe_text import printable


@lru_cache(maxsize=None)
def engine(name: str) -> Engine:
    """The engine of an --engine id (PlannerError for an unknown one)."""
    mod = ENGINE_MODULES.get(name)
    if mod is None:
        raise PlannerError(f"unknown engine '{name}'; valid: {', '.join(ENGINE_MODULES)}")
    impl = importlib.import_module(mod).ENGINE_IMPL
    assert impl.name == name, (impl.name, name)
    return impl


def parse_command(text: str, base: PlanRequest) -> CommandRequest:
    """The plan request of pasted launch commands (--from-command): every node's commands of one
    deployment, one per line (planner.engines.command_text), read by the engine whose serving program
    they run."""
    from planner.engines.command_text import split_commands

    commands = split_commands(text)
    for name in ENGINE_MODULES:
        parsed = engine(name).parse_command(commands, base)
        if parsed is not None:
            return parsed
    raise PlannerError(f"--from-command: '{printable(commands[0][0])}' is not a launch command of "
                       f"{', '.join(engine(n).label for n in ENGINE_MODULES)} (llama-server, vllm serve, "
                       "python -m sglang.launch_server ...)")
