"""What the plans of Hugging Face serving engines (vLLM, SGLang) share: engine defaults, options, the
SchemePlan assembly from an engine's memory fit, the fewest-GPUs search.

Each engine's memory model (`fit`: parallel layout and memory budget, from planner.core.serving.memory's
arithmetic) is in its engine's package (planner.engines.vllm.memory, planner.engines.sglang.memory) and
handed in; this module turns a fit into the plan's MemoryPlan/DeviceMemory. Launch commands are the
engines' too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from planner.core.catalog import ModelEntry
from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.core.plan import DeviceMemory, MemoryPlan, PlanRequest, SchemePlan, TensorPlan
from planner.core.serving.hf_checkpoint import Format, checkpoint, formats_for, repo_for, resolve_format
from planner.core.serving.memory import EngineFit
from planner.core.serving.speed import predict_tp
from planner.core.serving import throughput
from planner.errors import PlannerError

KV_DTYPES = ("auto", "fp8")
# --cache-type-k values of the plan options that mean the engine's 16-bit cache ("auto") or FP8
_KV_AUTO = ("f16", "bf16", "auto")
_KV_FP8 = ("fp8", "fp8_e4m3", "fp8_e5m2")
KV_CACHE_TYPES = ("f16", "bf16", "fp8")          # the --cache-type-k values offered (the others are spellings)


@lru_cache(maxsize=4)
def engine_defaults(engine: str) -> dict[str, Any]:
    """profiles/engines/<engine>.toml."""
    path = profiles_dir() / "engines" / f"{engine}.toml"
    if not path.is_file():
        raise PlannerError(f"no engine profile for '{engine}' ({path})")
    return read_toml(path, "engine profile")


@dataclass
class EngineOptions:
    """Engine settings beyond the plan options; None means the engine's own default."""

    gpu_memory_utilization: float | None = None   # vLLM
    mem_fraction_static: float | None = None      # SGLang
    dp_attention: bool = False                     # SGLang --enable-dp-attention (dp = tp)
    ep_moe: bool = False                           # SGLang --enable-ep-moe (ep = tp)
    kv_cache_dtype: str = "auto"                   # auto | fp8
    max_num_seqs: int | None = None                # vLLM --max-num-seqs / SGLang --max-running-requests
    host: str = "0.0.0.0"
    port: int | None = None
    head_address: str = "HEAD_NODE_IP"             # the first node's address, for multi-node commands
    model_path: str | None = None                  # a local checkpoint instead of the published repo
    served_model_name: str | None = None

    def validate(self) -> None:
        for k in ("gpu_memory_utilization", "mem_fraction_static"):
            v = getattr(self, k)
            if v is not None and not 0.0 < v < 1.0:
                raise PlannerError(f"{k.replace('_', '-')} must be between 0 and 1, got {v}")
        if self.kv_cache_dtype not in KV_DTYPES:
            raise PlannerError(f"unknown KV cache dtype '{self.kv_cache_dtype}'; valid: {', '.join(KV_DTYPES)}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise PlannerError("max-num-seqs must be at least 1")
        if self.port is not None and not 0 < self.port < 65536:
            raise PlannerError(f"bad port {self.port}")


def options_from_request(req: PlanRequest, options: EngineOptions | None = None) -> EngineOptions:
    """The engine options implied by the plan options (--cache-type-k f16 -> auto, fp8 -> fp8)."""
    opts = dataclasses.replace(options) if options is not None else EngineOptions()
    if options is None:
        opts.gpu_memory_utilization = req.gpu_memory_utilization
        opts.mem_fraction_static = req.mem_fraction_static
        opts.dp_attention = req.dp_attention
        opts.ep_moe = req.ep_moe
        if req.head_address:
            opts.head_address = req.head_address
        opts.model_path = req.checkpoint
        opts.max_num_seqs = req.max_num_seqs
    k = (req.cache_type_k or "f16").lower()
    if options is None or opts.kv_cache_dtype == "auto":
        if k in _KV_FP8:
            opts.kv_cache_dtype = "fp8"
        elif k not in _KV_AUTO:
            raise PlannerError(f"--cache-type-k {req.cache_type_k}: vLLM and SGLang cache in the model's 16-bit "
                               "dtype or FP8; valid: f16, bf16, fp8")
    opts.validate()
    return opts


def weight_only_fp8(weight_dtype: str, device_profile) -> bool:
    """An FP8 checkpoint on a GPU without FP8 units (A100, A800, ...): vLLM and SGLang run it weight-only
    with their FP8 Marlin kernels (the FP8 weights are dequantized to 16 bits inside the matmul; the
    activations stay 16-bit). Planned so everywhere: FP8 bytes in memory and read per token, the matmuls
    at the 16-bit rate."""
    return weight_dtype.startswith("f8") and device_profile is not None and not device_profile.has_fp8


WEIGHT_ONLY_FP8 = ("no FP8 units on {device}: {engine} runs {scheme} weight-only (FP8 Marlin kernels, the "
                   "weights dequantized to 16 bits in the matmul), planned with FP8 weights and 16-bit compute")


def kv_dtype_bytes(fmt: Format, opts: EngineOptions) -> int:
    return 1 if opts.kv_cache_dtype == "fp8" else 2


def resolve_formats(req: PlanRequest, entry: ModelEntry) -> list[Format]:
    if req.schemes:
        out = []
        for s in req.schemes:
            f = resolve_format(s)
            f.check_applies(entry)
            out.append(f)
        return out
    return formats_for(entry)


def check_counts(gpus: int, nodes: int) -> None:
    if gpus < 1:
        raise PlannerError(f"--gpus must be at least 1, got {gpus}")
    if nodes < 1:
        raise PlannerError(f"--nodes must be at least 1, got {nodes}")


def device_label(node: int, gpu: int, nodes: int) -> str:
    return f"CUDA{gpu}" if nodes == 1 else f"node{node}/CUDA{gpu}"


def stage_layers(n_layer_counts: list[int]) -> list[list[int]]:
    out, start = [], 0
    for n in n_layer_counts:
        out.append(list(range(start, start + n)))
        start += n
    return out


def ctx_sequences(opts: EngineOptions, req: PlanRequest) -> int:
    return max(1, int(req.parallel or 1))


def memory_plan(fit: EngineFit, per_device: list[DeviceMemory], ctx: int) -> MemoryPlan:
    return MemoryPlan(
        kv_cache_bytes=sum(d.kv_bytes for d in per_device),
        compute_bytes=sum(d.compute_bytes for d in per_device),
        host_bytes=0,
        per_device=per_device,
        n_ctx=ctx,
        notes=list(fit.notes),
        max_sequences=fit.max_sequences,
    )


def scheme_plan(engine: str, entry: ModelEntry, fmt: Format, fit: EngineFit, per_device: list[DeviceMemory],
                ctx: int, with_tensors: bool) -> SchemePlan:
    ck = checkpoint(entry, fmt)
    tensors = []
    if with_tensors:
        tensors = [TensorPlan(t.name, tuple(reversed(t.shape)), t.dtype, t.bytes, "bf16") for t in ck.tensors()]
    notes = []
    repo = repo_for(fmt, entry)
    notes.append(f"checkpoint: {repo}" if repo else f"no published {fmt.id} checkpoint of {entry.id} is known; "
                 "sizes are for one made with the format's recipe")
    if ck.mtp_layers:
        notes.append(f"the checkpoint carries {ck.mtp_layers} multi-token-prediction layer(s), which {engine} "
                     "does not load unless MTP speculative decoding is enabled")
    if fmt.id == "AWQ" and ck.group_size != fmt.group_size:
        notes.append(f"AWQ group size {ck.group_size} for {entry.id} (the published checkpoint's)")
    notes.append(f"{fit.layout.describe()} over {fit.nodes} node(s) x {fit.gpus_per_node} GPU(s); "
                 f"KV cache for {fit.kv_tokens:,} tokens per {'DP rank' if fit.layout.dp_attention else 'replica'}, "
                 f"{fit.max_sequences} concurrent sequence(s) of {ctx:,} tokens")
    sp = SchemePlan(id=fmt.id, kind=engine, size_bytes=ck.size_bytes, params=ck.params,
                    type_bytes=ck.type_bytes(), tensors=tensors, memory=memory_plan(fit, per_device, ctx),
                    notes=notes)
    return sp


def unplaced_plan(engine: str, entry: ModelEntry, fmt: Format, reason: str, with_tensors: bool) -> SchemePlan:
    ck = checkpoint(entry, fmt)
    tensors = [TensorPlan(t.name, tuple(reversed(t.shape)), t.dtype, t.bytes, "bf16") for t in ck.tensors()] \
        if with_tensors else []
    return SchemePlan(id=fmt.id, kind=engine, size_bytes=ck.size_bytes, params=ck.params,
                      type_bytes=ck.type_bytes(), tensors=tensors, memory=None,
                      notes=[f"{engine} cannot place it on these GPUs: {reason}"])


FitFn = Callable[..., "tuple[EngineFit, list[DeviceMemory]]"]


def plan_formats(engine: str, fit: FitFn, req: PlanRequest, model_entry: ModelEntry, device_profile, gpus: int,
                 nodes: int, *, options: EngineOptions | None = None) -> list[SchemePlan]:
    """One SchemePlan per format (req.schemes, or every format the model has) with the engine's memory
    model `fit(entry, fmt, profile, gpus, nodes, ctx, opts, sequences=)`."""
    check_counts(gpus, nodes)
    opts = options_from_request(req, options)
    out = []
    seqs = ctx_sequences(opts, req)
    for fmt in resolve_formats(req, model_entry):
        try:
            fitted, devices = fit(model_entry, fmt, device_profile, gpus, nodes, req.ctx, opts, sequences=seqs)
        except PlannerError as e:
            if req.schemes:
                raise
            # a format the layout cannot shard stays in the list, unplaced, with the reason
            out.append(unplaced_plan(engine, model_entry, fmt, str(e), req.with_tensors))
            continue
        sp = scheme_plan(engine, model_entry, fmt, fitted, devices, req.ctx, req.with_tensors)
        parts = serving_parts(engine, model_entry, fmt, fitted, device_profile, req, opts)
        if parts is None:          # no device profile: the old single-stream model (it says why it has none)
            sp.speed = predict_tp(checkpoint(model_entry, fmt), fitted.layout, device_profile, req, gpus,
                                  kv_bytes_per_elem=kv_dtype_bytes(fmt, opts))
        else:
            sp.speed = speed_from_serving(parts, req)
            if req.prompt + req.gen_tokens > req.ctx:
                sp.notes.append(f"no serving figures: a request of {req.prompt:,} + {req.gen_tokens:,} tokens is "
                                f"longer than the context ({req.ctx:,}); {engine} refuses it")
            else:
                cost, coef, wl, top, world = parts
                sp.serving = throughput.serving(cost, coef, wl, req.concurrency, top, world,
                                                ttft_s=req.ttft_ms / 1000.0 if req.ttft_ms else None,
                                                tpot_s=req.tpot_ms / 1000.0 if req.tpot_ms else None)
        if weight_only_fp8(fmt.weight_dtype, device_profile):
            # predict_tp computes every format's matmuls at the 16-bit rate: what Marlin's FP8 path does
            sp.notes.append(WEIGHT_ONLY_FP8.format(device=device_profile.id, engine=engine, scheme=fmt.id))
        sp.memory.fewest_devices = fewest_devices(fit, model_entry, fmt, device_profile, gpus, nodes, req.ctx,
                                                  opts, seqs)
        if req.max_context:
            # the activations do not depend on the context: the KV cache alone decides it
            sp.memory.max_context = (min(fitted.kv_tokens, model_entry.hparams.n_ctx_train)
                                    if fitted.kv_tokens else None)
        out.append(sp)
    return out


def fewest_devices(fit: FitFn, entry: ModelEntry, fmt: Format, profile, gpus: int, nodes: int, ctx: int,
                   opts: EngineOptions, sequences: int) -> int | None:
    """Fewest GPUs of the planned ones that serve it: fewer GPUs on one node, or fewer whole nodes."""
    layouts = [(gpus, n) for n in range(1, nodes + 1)] if nodes > 1 else [(g, 1) for g in range(1, gpus + 1)]
    for g, n in layouts:
        try:
            fitted, devs = fit(entry, fmt, profile, g, n, ctx, opts, sequences=sequences)
        except PlannerError:
            continue
        if all(d.headroom_bytes >= 0 for d in devs):
            return fitted.layout.world
    return None


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def serving_parts(engine: str, entry: ModelEntry, fmt: Format, fitted: EngineFit, profile, req: PlanRequest,
                  opts: EngineOptions):
    """(Costs, coefficients, Workload, max concurrency, GPUs) of a fitted format for
    planner.core.serving.throughput (None: no device profile with a bandwidth)."""
    if profile is None or profile.bandwidth_gbs <= 0:
        return None
    from planner.core.llamacpp.speed import factors

    d = engine_defaults(engine)
    hp = entry.hparams
    ck = checkpoint(entry, fmt)
    layout = fitted.layout
    cost = throughput.costs(ck, layout, profile, kv_dtype_bytes(fmt, opts), factors("hf").links)
    coef = throughput.coefficients(engine, throughput.gpu_class(profile.id, profile.has_fp8))
    by_dev = d.get("max_num_batched_tokens_by_device", {})
    chunk = int(by_dev.get(profile.id, d.get("max_num_batched_tokens") or d.get("chunked_prefill_size") or 8192))
    block = int((d.get("mla_block_size") if hp.arch == "deepseek2" else None) or d.get("block_size") or 1)
    max_seqs = opts.max_num_seqs or d.get("max_num_seqs")
    dp = layout.tp if layout.dp_attention else 1
    top = throughput.max_concurrency(fitted.kv_tokens, req.prompt, req.gen_tokens, block, dp, max_seqs)
    return cost, coef, throughput.Workload(req.prompt, req.gen_tokens, chunk), top, layout.world


def speed_from_serving(parts, req: PlanRequest):
    """The plan's single-stream speed from the same model as its serving figures (one answer): decode at
    --depth with one sequence (linear in the depth: decode_base_s and decode_per_depth_s), prefill of
    --prompt tokens alone."""
    from planner.core.llamacpp.speed import Speed

    cost, coef, wl, _, _ = parts

    def step(depth: float) -> tuple[float, dict]:
        st, cm = throughput.step_terms(cost, 1, depth)
        return throughput.seconds(st, coef) + cm, st

    base, _ = step(0)
    at, st = step(req.depth)
    far, _ = step(1e6)
    pre, pcm = throughput.prefill_terms(cost, req.prompt, wl.chunk)
    pt = throughput.seconds(pre, coef) + pcm
    bound = max(st, key=lambda k: st[k] * throughput.coefficient(coef, k))
    return Speed(prefill_tps=req.prompt / pt if pt > 0 else 0.0, decode_tps=1.0 / at if at > 0 else 0.0,
                 prompt_tokens=req.prompt, depth_tokens=req.depth,
                 bound=throughput.BOUND_LABELS.get(bound.removesuffix("_moe"), bound),
                 decode_base_s=base, decode_per_depth_s=(far - base) / 1e6)
