"""Hugging Face serving engines (vLLM, SGLang): checkpoints and their formats, the memory each engine
allocates per GPU, their tensor-parallel speed, and the plan of one request's formats (plan_formats).

May import: planner.core's base modules, planner.core.ggml, planner.core.devices, and of llama.cpp's
package only planner.core.llamacpp.speed (the speed model's shared parts: Processor, Link, Factors, Speed).
"""
