"""What the Hugging Face serving engines (vLLM, SGLang) share: checkpoints and their formats, the
arithmetic of memory per GPU (sharded weights, KV cache, activations), their tensor-parallel speed, and the
plan of one request's formats (plan_formats; each engine hands in its own memory model, which lives in its
package under planner/engines/).

May import: planner.core's base modules, planner.core.ggml, planner.core.devices, and of llama.cpp's
package only planner.core.llamacpp.speed (the speed model's shared parts: Processor, Link, Factors, Speed).
"""
