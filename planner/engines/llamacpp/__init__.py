"""llama.cpp: the engine (engine.py, ENGINE_IMPL; its sizing and memory model are planner.core.llamacpp),
locating and running its binaries, command lines, log parsing, quantize and serve runs."""
