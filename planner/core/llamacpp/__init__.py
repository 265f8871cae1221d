"""llama.cpp as the planner models it: the per-tensor type rules (src/llama-quant.cpp), schemes and
recipes (their tensor-name patterns matched in bounded time: regex_match), the tensors the converter writes, exact GGUF sizing, memory per device (KV cache, compute
buffers, placement), the plan-space search (context, devices, --n-cpu-moe), GPU-only and hybrid
deployments, the speed model, and the plan of one request's schemes (plan_schemes).

May import: planner.core's base modules, planner.core.ggml, planner.core.devices.
"""
