"""Bounds on a plan request, checked before anything is allocated or planned.

Every count and size a request carries is bounded here, once, for every caller (CLI, TUI, scripts):

- Devices: at most MAX_GPUS_PER_NODE devices per node, MAX_NODES nodes and MAX_DEVICES in all. The
  largest single accelerator domains built are 72 GPUs (NVIDIA GB200 NVL72, one NVLink domain) and 384
  NPUs (Huawei CloudMatrix 384, one HCCS/UB domain), so 384 per "node" covers a whole supernode planned
  as one; DeepSeek's own serving deployment runs decode on 18 nodes x 8 GPUs = 144 GPUs (DeepSeek-V3/R1
  inference system overview, 2025). So a plan spans at most 384 devices in all (one supernode, or e.g.
  48 nodes x 8), over at most 64 nodes. With these bounds every accepted plan answers in about 2 s or
  less on a 2-core machine, --model auto (every model, every scheme) on 384 devices being the slowest
  (bench/bench_headless.py --bounds measures the extremes).
- Context: llama.cpp's `-c/--ctx-size` is parsed into a signed 32-bit int (common/arg.cpp: std::stoi into
  common_params.n_ctx, an int32_t), so no context above 2^31 - 1 can be launched; it is refused here.
  A context above the model's trained context is planned with a note (build_plan adds it).
- Batch sizes and slots: 32-bit counts in llama.cpp too (int32_t n_batch, n_ubatch, n_parallel).
- Serving (--concurrency, --prompt, --gen, --ttft-ms, --tpot-ms): at most MAX_CONCURRENCY requests in
  flight (2^20: vLLM's and SGLang's schedulers keep one entry per running request, and no published
  deployment runs more than a few thousand at once), prompt and generated tokens within 32 bits, and
  service-level targets of at most a day (MAX_TARGET_MS). A request longer than the context is no input
  error (the defaults may make one with a small --ctx): its serving figures are left out with a note
  (vLLM refuses such a request, max_model_len; SGLang too, context_length).
- --tensor-split: llama.cpp reads the proportions as float (32-bit) and divides by their sum, so every
  value must be finite and >= 0 and their float32 sum > 0 (a denormal such as 1e-320 is 0 in float32).
"""

from __future__ import annotations

import math
import struct

from planner.core.plan import PlanRequest
from planner.errors import PlannerError

MAX_GPUS_PER_NODE = 384
MAX_NODES = 64
MAX_DEVICES = 384
MAX_RPC_DEVICES = 64           # each one a server process and a network hop: far beyond any real setup
INT32_MAX = 2**31 - 1
MAX_CONCURRENCY = 1 << 20
MAX_TARGET_MS = 86_400_000.0   # a day


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def check_tensor_split(split: list[float] | tuple[float, ...] | None) -> None:
    if split is None:
        return
    if not split:
        raise PlannerError("--tensor-split needs at least one proportion")
    for v in split:
        if not math.isfinite(v) or v < 0:
            raise PlannerError(f"--tensor-split values must be finite numbers >= 0, got {v!r}")
    try:
        total = sum(_f32(v) for v in split)
    except OverflowError:
        raise PlannerError("--tensor-split values must fit llama.cpp's 32-bit floats") from None
    if not math.isfinite(total):
        raise PlannerError("--tensor-split proportions add up to more than llama.cpp's 32-bit floats hold (it "
                           "divides by their sum); use smaller numbers in the same ratio")
    if not total > 0:
        raise PlannerError("--tensor-split proportions must add up to more than 0 (as 32-bit floats)")


def check_device_count(gpus: int, nodes: int) -> None:
    """gpus per node x nodes within MAX_DEVICES (also for a profile's own per-node count)."""
    if gpus * nodes > MAX_DEVICES:
        raise PlannerError(f"--gpus x --nodes is {gpus * nodes} devices; at most {MAX_DEVICES} are planned")


def check_request_bounds(req: PlanRequest) -> None:
    """Raise PlannerError (exit 2) for any count or size outside what llama.cpp and real hardware take."""
    if req.gpus is not None and not 0 <= req.gpus <= MAX_GPUS_PER_NODE:
        raise PlannerError(f"--gpus must be from 0 to {MAX_GPUS_PER_NODE} (the largest single accelerator "
                           f"domain, a CloudMatrix 384), got {req.gpus}")
    if not 1 <= req.nodes <= MAX_NODES:
        raise PlannerError(f"--nodes must be from 1 to {MAX_NODES}, got {req.nodes}")
    if req.gpus is not None:
        check_device_count(req.gpus, req.nodes)
    if len(req.rpc) > MAX_RPC_DEVICES:
        raise PlannerError(f"at most {MAX_RPC_DEVICES} --rpc devices, got {len(req.rpc)}")
    if not 1 <= req.ctx <= INT32_MAX:
        raise PlannerError(f"--ctx must be from 1 to {INT32_MAX} (llama.cpp's context is a 32-bit count), "
                           f"got {req.ctx}")
    for name, v, low in (("--parallel", req.parallel, 1), ("--ubatch", req.ubatch, 1), ("--batch", req.batch, 1),
                         ("--ngl", req.ngl, 0), ("--n-cpu-moe", req.n_cpu_moe, 0)):
        if v is not None and v != "auto" and not low <= v <= INT32_MAX:
            raise PlannerError(f"{name} must be from {low} to {INT32_MAX}, got {v}")
    if req.depth > req.ctx:
        raise PlannerError(f"--depth {req.depth} is beyond the context (--ctx {req.ctx}): a sequence holds at most "
                           "--ctx tokens")
    check_tensor_split(req.tensor_split)
    check_serving_bounds(req)


def check_serving_bounds(req: PlanRequest) -> None:
    """Concurrency, request lengths and service-level targets (see the module docstring)."""
    if not 1 <= req.concurrency <= MAX_CONCURRENCY:
        raise PlannerError(f"--concurrency must be from 1 to {MAX_CONCURRENCY} requests in flight, got {req.concurrency}")
    for name, v in (("--prompt", req.prompt), ("--gen", req.gen_tokens)):
        if not 1 <= v <= INT32_MAX:
            raise PlannerError(f"{name} must be from 1 to {INT32_MAX} tokens, got {v}")
    for name, v in (("--ttft-ms", req.ttft_ms), ("--tpot-ms", req.tpot_ms)):
        if v is not None and not (math.isfinite(v) and 0 < v <= MAX_TARGET_MS):
            raise PlannerError(f"{name} must be a number of milliseconds above 0 and at most {MAX_TARGET_MS:.0f} "
                               f"(a day), got {v}")
