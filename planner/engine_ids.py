"""The --engine ids and the module that implements each one (planner.engines.registry imports them).

Imports nothing, so that the declaration of the flags (planner/options.py) can offer the engines without
importing any; adding an engine adds its id here and its package under planner/engines/.
"""

# --engine id -> the module that implements it (imported on first use: the headless path stays fast)
ENGINE_MODULES = {
    "llama.cpp": "planner.engines.llamacpp.engine",
    "vllm": "planner.engines.vllm.engine",
    "sglang": "planner.engines.sglang.engine",
}


def engine_names() -> tuple[str, ...]:
    return tuple(ENGINE_MODULES)
