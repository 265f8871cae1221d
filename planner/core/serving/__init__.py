"""Hugging Face serving engines (vLLM, SGLang): checkpoints and their formats, the memory each engine
allocates per GPU, and the plan of one request's formats (plan_formats).

May import: planner.core's base modules, planner.core.devices, planner.core.llamacpp.speed (the shared
speed model, until it has its own module).
"""
