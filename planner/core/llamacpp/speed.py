"""How fast a plan runs: prefill tokens/s for a prompt and decode tokens/s at a context depth.

The structure (every figure comes in as a value; the efficiency factors are data in profiles/speed/):

Decode (one token, batch 1) is memory-bound: every weight the token uses is read once, from the memory
of the device that holds it. For each place (a device, or the host) the bytes read per token are
  - every non-expert weight of its layers (attention, norms, shared experts, dense FFNs, the output),
  - of the routed expert tensors (ffn_{gate,up,down}_exps) only the active share n_expert_used/n_expert:
    a token is routed to 8 of DeepSeek-V3/R1's 256 experts, so 1/32 of their bytes are read, not all,
  - one row of token_embd (the host's get_rows),
  - its layers' KV cache up to the depth: K (+ V) row bytes per cached token (MLA: the latent row of
    kv_lora_rank + rope dims; GQA: n_head_kv x head_dim for K and V),
and its time is  sum over type families of bytes / (peak bandwidth x efficiency(backend, family))
(on a host whose kernels were probed: each type's bytes at its measured streaming rate, the routed
experts' at the type's measured MUL_MAT_ID rate, plus its rows read x its measured cost per row,
planner/hardware/kernel_probe.py)
plus a fixed per-layer cost (kernel launches and small kernels per layer and token, per backend and
layer kind: a DeepSeek MoE layer's router, top-k and expert sums on a GPU; on a probed host
llama.cpp's own cost per layer kind and per token, measured with llama-bench on skeleton
models, planner/engines/llamacpp/overhead_probe.py);
attention over the cache costs the larger of its bytes at the bandwidth and its FLOPs at the dense rate
(on a host whose kernels were probed: n_head x (a fixed part + a part per K+V dim) per cached token and
layer, as measured for the plan's attention class, MLA's shared latent row or GQA's heads,
planner/hardware/kernel_probe.py).
The places of a layer split (-sm layer) run ONE AFTER ANOTHER for a token: their times add (a split
adds capacity, not speed). Between consecutive places the hidden state (n_embd floats) crosses a link:
latency + bytes / bandwidth (PCIe between local devices and the host, the network for RPC devices).
With --n-cpu-moe the experts of a layer run on the host while the rest of the layer runs on the GPU:
two crossings per such layer.

Prefill (a prompt of P tokens in ubatches of U): per ubatch each place reads its weights once (all
experts: a ubatch of hundreds of tokens touches nearly every expert) and computes 2 x (active weight
elements) x U FLOPs plus attention 2 x n_head x (K dims + V dims) x (depth + U/2) x U per layer; its time
is max(FLOPs / (dense TFLOPS x efficiency), bytes / (bandwidth x efficiency)), a GPU's routed-expert
FLOPs at the backend's `experts` share of that rate (MUL_MAT_ID: per expert only the tokens routed to it);
on a probed host each type's
FLOPs at its measured gemm rate, the routed experts' at the type's measured MUL_MAT_ID rate (each expert
multiplies only the tokens routed to it: small products, other kernels). Expert weights held in
host RAM are copied over PCIe to the GPU for each ubatch (llama.cpp's op offload for batches of 32 or
more) when the plan has GPUs, unless --no-op-offload keeps them on the host; on a CPU-only plan the host
computes them. Places again add up.

`bound` names the place or link with the largest share of the decode time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from planner.core.catalog import Hparams
from planner.core.data_files import read_toml
from planner.core.devices.host_kernels import AttentionCost, HostKernels, HostProbe, TypeKernels
from planner.core.ggml.tensor_types import parse_type, row_bytes
from planner.core.llamacpp.memory import (OP_OFFLOAD_MIN_BATCH, ROUTED_EXPERTS, MemoryOptions, kv_dims, override_rules,
                                          tensor_device, tensor_layer, tensor_site)
from planner.core.paths import profiles_dir
from planner.core.plan import MemoryPlan, TensorPlan
from planner.errors import PlannerError

HOST = "Host"
_FAMILY = {"f32": "float", "f16": "float", "bf16": "float", "f64": "float"}
@lru_cache(maxsize=None)
def speed_site(name: str, n_layer: int) -> tuple[int, bool]:
    """A tensor's layer and whether it is a routed-expert tensor (once per name: every scheme repeats them)."""
    il = tensor_layer(name, n_layer)
    return il, 0 <= il < n_layer and ROUTED_EXPERTS.search(name) is not None


@lru_cache(maxsize=None)
def _n_elements(shape: tuple[int, ...]) -> int:
    n = 1
    for x in shape:
        n *= x
    return n


@lru_cache(maxsize=None)
def type_family(type_name: str) -> str:
    """float (f32/f16/bf16), legacy (q4_0, q8_0, ...), k (q2_K..q8_K), iq (i-quants and ternary)."""
    n = type_name.lower()
    if n in _FAMILY:
        return _FAMILY[n]
    if n.startswith(("iq", "tq")):
        return "iq"
    if n.endswith("_k"):
        return "k"
    return "legacy"


@dataclass(frozen=True)
class Processor:
    """One place that runs layers, as values: a GPU (its profile's figures) or the host."""

    label: str                       # "CUDA0", "Host", "RPC[10.0.0.2:50052]"
    backend: str                     # factor table key: CUDA, ROCm, CANN, CPU, CPU-measured
    bandwidth_gbs: float             # peak memory bandwidth (CPU-measured: a measured read bandwidth)
    tflops: float                    # dense 16-bit TFLOPS (CPU: the host's measured or given figure)
    # the host's ggml kernels as measured on it (planner/hardware/kernel_probe.py); None where not measured
    kernels: HostKernels | None = None

    def attention(self, attention_class: str) -> AttentionCost | None:
        """Decode attention's cost per cached token measured on this host for the class, else None."""
        return self.kernels.attention.get(attention_class) if self.kernels else None

    def kernel(self, type_name: str) -> TypeKernels | None:
        """The type's kernels measured on this host (f32 as f16), else None."""
        return self.kernels.type(type_name) if self.kernels else None


@dataclass(frozen=True)
class Link:
    label: str
    bandwidth_gbs: float
    latency_us: float

    def seconds(self, nbytes: float) -> float:
        return self.latency_us * 1e-6 + nbytes / (self.bandwidth_gbs * 1e9)


@dataclass(frozen=True)
class Factors:
    """Achieved fractions of peak, per backend and type family (profiles/speed/<engine>.toml)."""

    decode: dict[str, dict[str, float]]
    prefill: dict[str, dict[str, float]]
    # per backend, per layer kind (layer_kind: "mla_moe", ...; "default" for the others) the fixed cost
    # of a layer and token in microseconds; the backend "default" for backends without an entry
    layer_us: dict[str, dict[str, float]]
    links: dict[str, Link]
    source: str = ""

    def experts_share(self, backend: str) -> float:
        """The routed experts' prefill rate as a fraction of the dense products' ([prefill.<backend>]
        experts; 1.0 where not given): a ubatch's MUL_MAT_ID multiplies each expert with only the tokens
        routed to it, small products that fill the GPU less than one dense product does."""
        row = self.prefill.get(backend) or self.prefill.get("default") or {}
        v = row.get("experts", 1.0)
        if not 0 < v <= 1:
            raise PlannerError(f"speed factors: prefill experts share for {backend} must be in (0, 1]")
        return v

    def layer_seconds(self, backend: str, kind: str = "default") -> float:
        """The fixed cost in seconds of one layer of that kind for one graph evaluation on the backend."""
        row = self.layer_us.get(backend) or self.layer_us.get("default") or {}
        return row.get(kind, row.get("default", 0.0)) * 1e-6

    def eff(self, table: dict[str, dict[str, float]], backend: str, family: str) -> float:
        row = table.get(backend) or table.get("default")
        if not row:
            raise PlannerError(f"speed factors: no entry for backend {backend}")
        v = row.get(family, row.get("default"))
        if v is None or v <= 0:
            raise PlannerError(f"speed factors: no {family} factor for backend {backend}")
        return v


def load_factors(path) -> Factors:
    data = read_toml(path, "speed factors")
    try:
        links = {k: Link(k, float(v["bandwidth_gbs"]), float(v["latency_us"])) for k, v in data["links"].items()}
        return Factors(decode={k: {f: float(x) for f, x in v.items() if f != "source"} for k, v in data["decode"].items()},
                       prefill={k: {f: float(x) for f, x in v.items() if f != "source"}
                                for k, v in data["prefill"].items()},
                       layer_us=_layer_us(data["layer_us"]),
                       links=links, source=str(data.get("source", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise PlannerError(f"speed factors {path}: bad or missing entry ({e})") from None


def _layer_us(table: dict) -> dict[str, dict[str, float]]:
    """[layer_us]: `backend = us` (every kind) or a [layer_us.<backend>] table of `kind = us`; `default`
    at the top serves backends without an entry. Every figure at least 0."""
    out: dict[str, dict[str, float]] = {}
    for k, v in table.items():
        if k == "source":
            continue
        row = {"default": float(v)} if not isinstance(v, dict) else \
            {kind: float(x) for kind, x in v.items() if kind != "source"}
        if any(x < 0 for x in row.values()):
            raise ValueError(f"layer_us.{k} below 0")
        out[k] = row
    return out


@lru_cache(maxsize=4)
def factors(engine_file: str = "llamacpp") -> Factors:
    return load_factors(profiles_dir() / "speed" / f"{engine_file}.toml")


def layer_kind(hp: Hparams, il: int) -> str:
    """The kind of layer il as the host's llama.cpp overhead is measured per kind
    (planner.core.devices.host_kernels.LAYER_KINDS): its attention's graph (DeepSeek's MLA blocks, with either
    cache layout, or grouped-query attention) and its FFN (dense, or routed experts). V3.2's and V4's
    blocks are counted as MLA blocks, the nearest measured: their indexer's nodes are not."""
    moe = hp.is_moe and il >= hp.n_layer_dense_lead
    return f"{layer_attention(hp.arch)}_{'moe' if moe else 'dense'}"


def layer_attention(arch: str) -> str:
    """The attention part of an architecture's layer kinds (layer_kind): "mla" or "gqa"."""
    return "mla" if arch in ("deepseek2", "deepseek32", "deepseek4") else "gqa"


@dataclass
class Speed:
    prefill_tps: float
    decode_tps: float
    prompt_tokens: int
    depth_tokens: int
    bound: str                               # the place or link with the largest share of decode time
    decode_seconds: dict[str, float] = field(default_factory=dict)   # per place/link, one token
    decode_bytes: dict[str, int] = field(default_factory=dict)       # per place, one token
    # decode time is linear in the depth (each place's attention costs max(bytes, FLOPs) per cached
    # token, both proportional to it): seconds per token at depth 0, and added per cached token
    decode_base_s: float = 0.0
    decode_per_depth_s: float = 0.0
    # the plan as the speed model saw it (SpeedLayout): a batch's decode step and a burst of prompts are
    # computed from it (planner/core/llamacpp/serving.py); not part of the JSON
    layout: Any = field(default=None, repr=False, compare=False)

    def decode_tps_at(self, depth: int) -> float:
        """Decode tokens/s of the same plan at another context depth (see decode_base_s)."""
        if depth < 0:
            raise PlannerError("depth must be at least 0")
        t = self.decode_base_s + depth * self.decode_per_depth_s
        return 1.0 / t if t > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"prefill_tps": round(self.prefill_tps, 3), "decode_tps": round(self.decode_tps, 3),
                "prompt_tokens": self.prompt_tokens, "depth_tokens": self.depth_tokens, "bound": self.bound}


@dataclass
class _Place:
    label: str
    proc: Processor
    decode: dict[str, float] = field(default_factory=dict)    # weight type -> bytes per token
    decode_rows: dict[str, float] = field(default_factory=dict)   # weight type -> rows read per token
    weights: dict[str, float] = field(default_factory=dict)   # weight type -> bytes read per ubatch
    flops: dict[str, float] = field(default_factory=dict)     # weight type -> FLOPs per prompt token
    expert_flops: dict[str, float] = field(default_factory=dict)   # of them, in routed-expert tensors
    expert_decode: dict[str, float] = field(default_factory=dict)  # weight type -> routed-expert bytes per token
    fixed_s: float = 0.0                                       # the host's llama.cpp cost per token of its layers
    graph_s: float = 0.0                                       # its layers' fixed cost per graph (speed factors)
    src_cols: dict[str, int] = field(default_factory=dict)    # weight type -> row lengths of its products
    flops_per_token: float = 0.0
    kv_row_bytes: int = 0                                      # KV bytes per cached token, its layers
    attn_flops_per_ctx: float = 0.0                            # attention FLOPs per token per cached token
    layers: int = 0
    pcie_bytes: float = 0.0                                    # host experts copied to a GPU per ubatch
    offload_flops_per_token: float = 0.0                       # their FLOPs, computed on that GPU
    offloaded: dict[str, float] = field(default_factory=dict)  # weight type -> those experts' bytes
    embd: dict[str, float] = field(default_factory=dict)      # weight type -> token_embd bytes per token
    expert_rows: dict[str, float] = field(default_factory=dict)   # weight type -> routed-expert rows per token
    decode_flops: dict[str, float] = field(default_factory=dict)  # weight type -> FLOPs per decoded token
    decode_expert_flops: dict[str, float] = field(default_factory=dict)   # of them, in routed experts
    decode_cols: dict[str, int] = field(default_factory=dict)     # weight type -> row lengths (not experts)


def _by_family(by_type: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t, v in by_type.items():
        f = type_family(t)
        out[f] = out.get(f, 0.0) + v
    return out


def _decode_rate(proc: Processor, fac: Factors, type_name: str) -> float:
    """Bytes per second a decode step reads a weight of this type at: the host's measured kernel
    (bytes streamed from memory: the larger of the memory's time and the kernel's compute, as the
    hardware resolves it), else the peak bandwidth x the backend's factor for the type family."""
    k = proc.kernel(type_name)
    if k is not None:
        return k.decode_bytes_per_s
    return proc.bandwidth_gbs * 1e9 * fac.eff(fac.decode, proc.backend, type_family(type_name))


def _prefill_rate(proc: Processor, fac: Factors, type_name: str) -> float:
    """FLOP/s of a ubatch matrix product on a weight of this type (measured kernel, else the factor)."""
    k = proc.kernel(type_name)
    if k is not None:
        return k.prefill_flops
    return proc.tflops * 1e12 * fac.eff(fac.prefill, proc.backend, type_family(type_name))


def _kv_row(hp: Hparams, opts: MemoryOptions) -> int:
    kd, vd = kv_dims(hp, opts.kv_mode)
    k = row_bytes(parse_type(opts.cache_type_k), kd)
    v = row_bytes(parse_type(opts.cache_type_v), vd) if vd else 0
    return k + v


def attention_class(arch: str, kv_mode: str | None) -> str:
    """The probe's attention class of a plan: "mla" for DeepSeek's absorbed latent cache, else "gqa"."""
    return "mla" if arch in ("deepseek2", "deepseek32") and kv_mode != "legacy" else "gqa"


def _attn_dims(hp: Hparams, kv_mode: str | None) -> int:
    """K + V dims per head that attention multiplies per cached token."""
    if hp.arch in ("deepseek2", "deepseek32"):
        if kv_mode == "legacy":
            return hp.n_embd_head_qk_nope + hp.n_rot + hp.n_embd_head_v
        return hp.n_lora_kv + hp.n_rot + hp.n_lora_kv      # absorbed MLA: latent K (576) and V (512)
    return 2 * hp.n_embd_head


def tensor_groups(tensors: list[TensorPlan], n_layer: int) -> list:
    """A scheme's tensors summed by what the speed model tells apart: ((layer, routed expert, type),
    (bytes, elements, rows, row lengths)); for the input layer (token_embd, read one row per token) the
    bytes of one row and that one row. Rows: elements / the row length (shape[0]): what a mat-vec pays
    its per-row cost on. Row lengths: the sum of the matrices' shape[0], the src1 elements per token
    their products convert to the weight type's dot-product type (a ubatch's cost per product beyond its
    FLOPs, kernel_probe's prefill_src_seconds).
    Everything below is linear in these sums, so it equals the per-tensor sum: 62 layers x a few types
    instead of the 1,100 tensors of R1. Sizing makes the same sums as it sizes a scheme
    (SchemePlan.tensor_groups, planner.core.llamacpp.sizing); this is for tensor lists from elsewhere."""
    acc: dict[tuple[int, bool, str], list] = {}
    for tp in tensors:
        il, exps = speed_site(tp.name, n_layer)
        key = (il, exps, tp.type)
        g = acc.get(key)
        if g is None:
            g = acc[key] = [0.0, 0, 0, 0]
        n = _n_elements(tp.shape)
        if il < 0:
            g[0] += tp.bytes / (tp.shape[1] if len(tp.shape) > 1 else 1)
            g[2] += 1
        else:
            g[0] += tp.bytes
            g[2] += n // tp.shape[0]
            if len(tp.shape) >= 2:
                g[3] += tp.shape[0]
        g[1] += n
    return [(k, tuple(v)) for k, v in acc.items()]


def placed_groups(hp: Hparams, tensors: list[TensorPlan], labels: list[str], opts: MemoryOptions,
                  memory: MemoryPlan) -> list:
    """tensor_groups with each group's place, for plans with tensor overrides (-ot): ((layer, routed
    expert, type, place label), sums), the place where planner.core.llamacpp.memory.plan_memory put the
    tensor (the same rules: the first matching -ot pattern, then --n-cpu-moe, then the layer's device)."""
    rules = override_rules(opts, labels)
    ldev = [-1] * (hp.n_layer + 1)
    for di, d in enumerate(memory.per_device):
        for il in d.layers:
            ldev[il] = di
    acc: dict[tuple[int, bool, str, str], list] = {}
    for tp in tensors:
        il, exps = speed_site(tp.name, hp.n_layer)
        _, expert, loaded = tensor_site(tp.name, hp.n_layer, hp.n_layer_nextn)
        if il < 0:
            where = HOST
        elif not loaded:
            where = HOST if exps and il < opts.n_cpu_moe else (labels[ldev[il]] if il < len(ldev) and ldev[il] >= 0 else HOST)
        else:
            di = tensor_device(tp.name, il, expert, rules, opts.n_cpu_moe, ldev)
            where = labels[di] if di >= 0 else HOST
        for key, v in tensor_groups([tp], hp.n_layer):
            g = acc.setdefault(key + (where,), [0.0, 0, 0, 0])
            for i in range(4):
                g[i] += v[i]
    return [(k, tuple(v)) for k, v in acc.items()]


@dataclass
class SpeedLayout:
    """Where a plan's weights, cache and layers sit for the speed model, as llamacpp_speed found them: the
    places with their sums per weight type, a token's path through them and its links. One token's decode,
    a batch of b tokens' decode step (planner/core/llamacpp/serving.py) and a prompt's prefill are all
    computed from it (decode_step, prefill_seconds)."""

    places: dict[str, _Place]
    hops: list[tuple[str, str, Link]]           # a token's path: consecutive places and the link between
    hybrid_layers: int                          # layers whose routed experts sit in host RAM, the rest on a GPU
    pcie: Link
    hidden_bytes: float                         # the hidden state crossing a link, per token
    host: Processor
    offload_gpu: Processor | None               # the GPU that computes host-resident experts (op offload)
    fac: Factors
    active: float                               # n_expert_used / n_expert (1.0 for dense models)
    n_head: int
    attn_dims: int
    attn_class: str
    ubatch: int                                 # min(-ub, -b)
    op_offload: bool = True                     # llama.cpp's op offload (off: --no-op-offload)


def expert_share(active: float, batch: int) -> float:
    """The expected share of a layer's routed experts that a batch of `batch` tokens touches when each token
    picks k of E experts (active = k/E) independently of the others: 1 - (1 - k/E)^batch (each expert is
    missed by a token with probability 1 - k/E). One token: k/E; DeepSeek-V3's 8 of 256 at 32 tokens: 64%."""
    if batch < 1:
        raise PlannerError("a batch has at least one token")
    if active >= 1.0:
        return 1.0
    return 1.0 - (1.0 - active) ** batch


def decode_step(lay: SpeedLayout, batch: int = 1, ctx_tokens: float = 0.0,
                expert_batch: int | None = None) -> tuple[dict[str, float], dict[str, int], float]:
    """One decode step of `batch` tokens (one per sequence) whose sequences hold `ctx_tokens` cached tokens
    together: (seconds per place and link, bytes read per place, seconds per cached token).

    Per place and weight type: the weights are read once per step, whatever the batch (the mat-vec's time of
    one token, as for single-stream decode), and multiplied with every token of the batch: the step takes the
    larger of the two, the read (bytes at the decode rate, plus the measured cost per row) and the math
    (batch x the type's FLOPs per token at its ubatch rate, the host's measured gemm rate or the dense rate
    x the prefill factor, plus the measured conversion of each token's activations). Of the routed experts a
    step reads those the batch touches (expert_share of their bytes and rows; `expert_batch` tokens route
    independently, default the batch: sequences that feed identical tokens touch the same experts, so one),
    and multiplies each token with its k, at the MUL_MAT_ID rates where measured. A batch of 32 or more
    tokens has llama.cpp copy experts held in host RAM to the GPU over PCIe for every step (op offload, unless --no-op-offload), as
    in prefill. Attention reads each sequence's own cache (ctx_tokens in all, at the larger of its bytes at
    the bandwidth and its FLOPs); the fixed costs (per layer and graph, per token on the host) are per step;
    the hidden states of the batch cross each link. With batch 1 this is the single-stream decode above."""
    if batch < 1:
        raise PlannerError("a decode step has at least one token")
    fac = lay.fac
    share = expert_share(lay.active, expert_batch or batch) if lay.active < 1.0 else 1.0
    sec: dict[str, float] = {}
    byts: dict[str, int] = {}
    per_ctx = 0.0
    offload = batch >= OP_OFFLOAD_MIN_BATCH and lay.offload_gpu is not None and lay.op_offload
    for lbl, p in lay.places.items():
        t = 0.0
        read = 0.0
        for typ, b in p.decode.items():
            k = p.proc.kernel(typ)
            be = p.expert_decode.get(typ, 0.0)
            emb = p.embd.get(typ, 0.0)
            bd = b - be - emb
            rows_e = p.expert_rows.get(typ, 0.0)
            rows_d = p.decode_rows.get(typ, 0.0) - rows_e
            fl = p.decode_flops.get(typ, 0.0)
            fe = p.decode_expert_flops.get(typ, 0.0)
            row_s = k.row_seconds if k is not None else 0.0
            rate = _decode_rate(p.proc, fac, typ)
            gemm = _prefill_rate(p.proc, fac, typ)
            # the weights outside the routed experts, and the token embeddings' rows (one per token)
            mem = (bd + emb * batch) / rate + rows_d * row_s
            math = batch * ((fl - fe) / gemm + p.decode_cols.get(typ, 0) * (k.prefill_src_seconds if k else 0.0))
            t += max(mem, math)
            read += bd + emb * batch
            if be:
                touched = be / lay.active * share if lay.active < 1.0 else be
                e_rate = k.expert_decode_bytes_per_s if k is not None and k.expert_decode_bytes_per_s else rate
                e_gemm = (k.expert_prefill_flops if k is not None and k.expert_prefill_flops
                          else gemm * (1.0 if k is not None else fac.experts_share(p.proc.backend)))
                host_experts = p.offloaded.get(typ, 0.0)
                if offload and host_experts:
                    # op offload: the host's expert tensors copied whole to the GPU and multiplied there
                    gpu = lay.offload_gpu
                    g_rate = gpu.tflops * 1e12 * fac.eff(fac.prefill, gpu.backend, type_family(typ)) * \
                        fac.experts_share(gpu.backend)
                    t += max(host_experts / (lay.pcie.bandwidth_gbs * 1e9), batch * fe / g_rate)
                else:
                    mem_e = touched / e_rate + rows_e / lay.active * share * row_s if lay.active < 1.0 else \
                        touched / e_rate + rows_e * row_s
                    t += max(mem_e, batch * fe / e_gemm)
                read += touched
        # llama.cpp's fixed cost per layer and graph on a measured host (its graph's building, scheduling
        # and nodes, planner/engines/llamacpp/overhead_probe.py), and per graph on the host that starts it
        t += p.fixed_s + (p.proc.kernels.token_seconds if lbl == HOST and p.proc.kernels is not None else 0.0)
        # attention over the cache, per cached token: its bytes at the bandwidth, its FLOPs at the dense
        # rate, the larger (both grow with the depth, so the decode time is linear in it)
        kv_read = p.kv_row_bytes / (p.proc.bandwidth_gbs * 1e9 * fac.eff(fac.decode, p.proc.backend, "kv"))
        # the math: at the host's measured flash-attention rate for the plan's attention class where the
        # probe measured it (planner/hardware/kernel_probe.py), else at the dense rate x the "attn" factor
        measured = p.proc.attention(lay.attn_class)
        if measured is not None:
            kv_math = p.layers * measured.seconds(lay.n_head, lay.attn_dims)
        else:
            kv_math = p.attn_flops_per_ctx / (p.proc.tflops * 1e12 * fac.eff(fac.prefill, p.proc.backend, "attn")) \
                if p.proc.tflops > 0 else 0.0
        t += ctx_tokens * max(kv_read, kv_math)
        per_ctx += max(kv_read, kv_math)
        t += p.graph_s
        sec[lbl] = t
        byts[lbl] = int(read + p.kv_row_bytes * ctx_tokens)
    for a, b, lk in lay.hops:
        key = f"link {a}->{b}"
        sec[key] = sec.get(key, 0.0) + lk.seconds(lay.hidden_bytes * batch)
    if lay.hybrid_layers:
        sec["link PCIe (experts in host RAM)"] = 2 * lay.hybrid_layers * lay.pcie.seconds(lay.hidden_bytes * batch)
    return sec, byts, per_ctx


def prefill_seconds(lay: SpeedLayout, prompt: int, depth: int = 0, sequences: int = 1) -> float:
    """Seconds to prefill `sequences` prompts of `prompt` tokens each (after `depth` cached tokens each),
    submitted together: their sequences x prompt tokens in ubatches of -ub, one after another (llama.cpp
    splits a batch into ubatches whatever sequences they hold). Per ubatch each place reads its weights
    once and computes every token; a token's attention covers its own sequence's cache up to it."""
    if prompt < 1 or depth < 0 or sequences < 1:
        raise PlannerError("a prefill has at least one prompt token, a depth of at least 0 and one sequence")
    fac, host, pcie = lay.fac, lay.host, lay.pcie
    u_size = lay.ubatch
    n_tokens = prompt * sequences
    total = 0.0
    done = 0
    while done < n_tokens:
        u = min(u_size, n_tokens - done)
        # the cached tokens each token of this ubatch attends to, summed: position (done + j) is token
        # (done + j) mod prompt of its sequence (+ 0.5: itself, half counted, as the causal mask does)
        ctx_sum = sum(depth + i + 0.5 for i in _positions(done, u, prompt)) if sequences > 1 else \
            u * (depth + done + u / 2.0)
        for lbl, p in lay.places.items():
            fl = p.flops_per_token * u
            fl_attn = p.attn_flops_per_ctx * ctx_sum
            if p.proc.kernels is not None:
                # measured kernels: each type's FLOPs at its own gemm's rate; those of routed experts at the
                # type's measured MUL_MAT_ID rate where probed (small per-expert products, other code paths)
                compute = 0.0
                for typ, f in p.flops.items():
                    fe = p.expert_flops.get(typ, 0.0)
                    k = p.proc.kernel(typ)
                    er = k.expert_prefill_flops if fe and k is not None else None
                    if er:
                        compute += (f - fe) * u / _prefill_rate(p.proc, fac, typ) + fe * u / er
                    else:
                        compute += f * u / _prefill_rate(p.proc, fac, typ)
                    if k is not None:
                        # each product's conversion of its src1 (row length x ubatch elements) to the
                        # type's dot-product type, as measured beyond the FLOPs
                        compute += p.src_cols.get(typ, 0) * u * k.prefill_src_seconds
            else:
                fams = _by_family(p.weights)
                fam = max(fams, key=lambda f: fams[f]) if fams else "float"
                # the weight mix's dominant family sets the matmul kernels' efficiency; the routed experts'
                # products run at the backend's share of it
                rate = p.proc.tflops * 1e12 * fac.eff(fac.prefill, p.proc.backend, fam)
                fl_exp = sum(p.expert_flops.values()) * u
                compute = ((fl - fl_exp) + fl_exp / fac.experts_share(p.proc.backend)) / rate if fl else 0.0
            if fl_attn:
                # attention over a ubatch is a matrix product too (each cached row serves U queries):
                # the float rate
                compute += fl_attn / (p.proc.tflops * 1e12 * fac.eff(fac.prefill, p.proc.backend, "float"))
            memt = sum(b / _decode_rate(p.proc, fac, typ) for typ, b in p.weights.items())
            total += max(compute, memt) + p.graph_s
            if p.pcie_bytes:
                # host-resident experts run on the first GPU: copied over PCIe, computed there
                gpu = lay.offload_gpu
                fams_g = _by_family(p.decode)
                fam_g = max(fams_g, key=lambda f: fams_g[f])
                if u >= OP_OFFLOAD_MIN_BATCH and lay.op_offload:
                    off = p.offload_flops_per_token * u / (gpu.tflops * 1e12 * fac.eff(fac.prefill, gpu.backend, fam_g))
                    total += max(off, p.pcie_bytes / (pcie.bandwidth_gbs * 1e9))
                else:
                    off = p.offload_flops_per_token * u / (host.tflops * 1e12 * fac.eff(fac.prefill, host.backend, fam_g))
                    total += max(off, p.pcie_bytes / (host.bandwidth_gbs * 1e9 * fac.eff(fac.decode, host.backend, fam_g)))
        for _, _, lk in lay.hops:
            total += lk.seconds(lay.hidden_bytes * u)
        total += 2 * lay.hybrid_layers * pcie.seconds(lay.hidden_bytes * u)
        done += u
    return total


def _positions(start: int, count: int, prompt: int):
    """The positions within their own sequence of tokens start .. start+count-1 of prompts laid end to end."""
    for j in range(start, start + count):
        yield j % prompt


def llamacpp_speed(hp: Hparams, tensors: list[TensorPlan], memory: MemoryPlan, opts: MemoryOptions,
                   procs: dict[str, Processor], host: Processor, fac: Factors, prompt: int, depth: int,
                   rpc_link: Link | None = None, groups: list | None = None) -> Speed:
    """Prefill and decode speed of one llama.cpp plan (see the module's docstring).

    procs: the Processor of each device label of memory.per_device; host: the host's."""
    if prompt < 1 or depth < 0:
        raise PlannerError("--prompt must be at least 1 and --depth at least 0")
    lay = speed_layout(hp, tensors, memory, opts, procs, host, fac, rpc_link, groups)
    sec, byts, per_depth = decode_step(lay, 1, depth)
    decode_time = sum(sec.values())
    bound = max(sec, key=lambda k: sec[k])
    total = prefill_seconds(lay, prompt, depth)
    return Speed(prefill_tps=prompt / total if total else 0.0, decode_tps=1.0 / decode_time if decode_time else 0.0,
                 prompt_tokens=prompt, depth_tokens=depth, bound=bound, decode_seconds=sec, decode_bytes=byts,
                 decode_base_s=decode_time - depth * per_depth, decode_per_depth_s=per_depth, layout=lay)


def speed_layout(hp: Hparams, tensors: list[TensorPlan], memory: MemoryPlan, opts: MemoryOptions,
                 procs: dict[str, Processor], host: Processor, fac: Factors, rpc_link: Link | None = None,
                 groups: list | None = None) -> SpeedLayout:
    """The SpeedLayout of one llama.cpp plan: each weight group where the memory plan put it, summed per
    place and type (see the module's docstring)."""
    ldev: dict[int, str] = {}
    for d in memory.per_device:
        for il in d.layers:
            ldev[il] = d.device
    places: dict[str, _Place] = {}

    def place(label: str) -> _Place:
        if label not in places:
            places[label] = _Place(label, host if label == HOST else procs[label])
        return places[label]

    has_gpu = any(d.layers for d in memory.per_device)
    active = hp.n_expert_used / hp.n_expert if hp.is_moe else 1.0
    hybrid_layers = 0
    if opts.tensor_overrides:
        # -ot: each tensor where the memory plan put it (the same rules, first match winning)
        placed = placed_groups(hp, tensors, [d.device for d in memory.per_device], opts, memory)
    else:
        placed = [((il, exps, ty, None), v)
                  for (il, exps, ty), v in (groups if groups is not None else tensor_groups(tensors, hp.n_layer))]
    host_experts: set[int] = set()                           # layers whose routed experts sit in host RAM
    for (il, exps, ty, where), (b, n_el, rows, cols) in placed:
        if il < 0:                                           # token_embd: one row per token, on the host
            p = place(HOST)
            p.decode[ty] = p.decode.get(ty, 0.0) + b          # (b: the bytes of one row, see tensor_groups)
            p.embd[ty] = p.embd.get(ty, 0.0) + b
            continue
        if where is None:
            where = HOST if exps and il < opts.n_cpu_moe else ldev.get(il, HOST)
        if exps and where == HOST:
            host_experts.add(il)
        p = place(where)
        share = active if exps else 1.0
        p.decode[ty] = p.decode.get(ty, 0.0) + b * share
        p.decode_rows[ty] = p.decode_rows.get(ty, 0.0) + rows * share
        p.decode_flops[ty] = p.decode_flops.get(ty, 0.0) + 2.0 * n_el * share
        if exps:
            p.expert_decode[ty] = p.expert_decode.get(ty, 0.0) + b * share
            p.expert_rows[ty] = p.expert_rows.get(ty, 0.0) + rows * share
            p.decode_expert_flops[ty] = p.decode_expert_flops.get(ty, 0.0) + 2.0 * n_el * share
        elif cols:
            p.decode_cols[ty] = p.decode_cols.get(ty, 0) + cols
        if where == HOST and exps and has_gpu:
            p.pcie_bytes += b                                # copied to the GPU per ubatch (op offload)
            p.offloaded[ty] = p.offloaded.get(ty, 0.0) + b
            p.offload_flops_per_token += 2.0 * n_el * share
        else:
            p.flops_per_token += 2.0 * n_el * share
            p.flops[ty] = p.flops.get(ty, 0.0) + 2.0 * n_el * share
            if exps:
                p.expert_flops[ty] = p.expert_flops.get(ty, 0.0) + 2.0 * n_el * share
            else:
                p.src_cols[ty] = p.src_cols.get(ty, 0) + cols
            p.weights[ty] = p.weights.get(ty, 0.0) + b
    kv_row = _kv_row(hp, opts)
    attn_dims = _attn_dims(hp, opts.kv_mode)
    attn = 2.0 * hp.n_head * attn_dims
    order: list[str] = [HOST]                                # a token's path: token_embd, then the layers
    for il in range(hp.n_layer + 1):
        where = ldev.get(il, HOST)
        p = place(where)
        if il < hp.n_layer:
            kind = layer_kind(hp, il)
            # llama.cpp's fixed cost of a layer of this kind per graph evaluation: measured on a probed
            # host, else the backend's figure of the speed factors
            p.fixed_s += p.proc.kernels.layer_seconds.get(kind, 0.0) if p.proc.kernels is not None else 0.0
            p.graph_s += fac.layer_seconds(p.proc.backend, kind)
        if il < hp.n_layer:
            p.kv_row_bytes += kv_row
            p.attn_flops_per_ctx += attn
            p.layers += 1
            if hp.is_moe and il in host_experts and where != HOST and il >= hp.n_layer_dense_lead:
                hybrid_layers += 1
        if not order or order[-1] != where:
            order.append(where)
    pcie = fac.links["pcie"]
    net = rpc_link or fac.links["network"]

    def link_for(a: str, b: str) -> Link:
        return net if a.startswith("RPC[") or b.startswith("RPC[") else pcie

    gpu = next((procs[d.device] for d in memory.per_device if d.layers), None) if has_gpu else None
    return SpeedLayout(places=places, hops=[(a, b, link_for(a, b)) for a, b in zip(order, order[1:])],
                       hybrid_layers=hybrid_layers, pcie=pcie, hidden_bytes=hp.n_embd * 4.0, host=host,
                       offload_gpu=gpu, fac=fac, active=active, n_head=hp.n_head, attn_dims=attn_dims,
                       attn_class=attention_class(hp.arch, opts.kv_mode), ubatch=max(1, min(opts.ubatch, opts.batch)),
                       op_offload=opts.op_offload)



def decode_curve(speed: Speed, max_depth: int, points: int = 17) -> list[tuple[int, float]]:
    """(depth, decode tokens/s) from 0 to max_depth (the context) in `points` even steps: the data of
    the TUI's speed plot (planner/tui/widgets/speed_plot.py), from the plan's own Speed."""
    if max_depth < 0 or points < 2:
        raise PlannerError("decode_curve needs max_depth >= 0 and at least 2 points")
    depths = sorted({round(max_depth * i / (points - 1)) for i in range(points)})
    return [(d, speed.decode_tps_at(d)) for d in depths]


def host_processor(req, host_profile) -> Processor:
    """The host as a device: --host-bandwidth (peak GB/s), else the figures measured on this machine
    (planner.hardware's probe, handed in as req.host_probe: a HostProbe, or (GB/s, TFLOPS)), else the host
    profile's (profiles/hardware/host.toml). The FLOPS figure: the probe's, else the profile's. Where the
    probe timed the host's ggml kernels (HostProbe.kernels), the decode and prefill rates of the weight
    types come from them instead of the bandwidth and the factors."""
    probe = HostProbe.of(req.host_probe) if req.host_probe is not None else None
    tflops = probe.tflops if probe else host_profile.bf16_tflops
    if req.host_bandwidth is not None:
        if req.host_bandwidth <= 0:
            raise PlannerError(f"--host-bandwidth must be more than 0 GB/s, got {req.host_bandwidth}")
        return Processor(HOST, "CPU", float(req.host_bandwidth), tflops)
    if probe:
        return Processor(HOST, "CPU-measured", probe.bandwidth_gbs, probe.tflops, probe.kernels)
    return Processor(HOST, "CPU", host_profile.bandwidth_gbs, tflops)


def slot_processors(labels: list[str], profile, host: Processor) -> dict[str, Processor]:
    """Each device of a plan as a Processor: its profile's peak figures (a CPU profile is the host)."""
    out = {}
    for lb in labels:
        if profile.vendor == "cpu" and not lb.startswith("RPC["):
            out[lb] = Processor(lb, host.backend, host.bandwidth_gbs, host.tflops, host.kernels)
        else:
            if profile.bandwidth_gbs <= 0:
                raise PlannerError(f"{profile.name}: the profile has no bandwidth figure; no speed can be predicted")
            out[lb] = Processor(lb, profile.backend, profile.bandwidth_gbs, profile.bf16_tflops)
    return out


def predict_llamacpp(hp: Hparams, sp, opts: MemoryOptions, hw, req) -> Speed | None:
    """The Speed of one llama.cpp scheme plan (sp.memory planned with `opts` on `hw`); None when a device
    of the plan has no bandwidth figure (its profile says so)."""
    from planner.core.devices.profiles import resolve_device

    if sp.memory is None or hw.profile is None:
        return None
    depth = req.depth
    host = host_processor(req, resolve_device("host"))
    try:
        # the devices that compute: those holding layers or tensors (-ot) (a plan has up to 384 devices)
        procs = slot_processors([d.device for d in sp.memory.per_device if d.layers or d.weights_bytes],
                                hw.profile, host)
    except PlannerError:
        return None
    fac = factors()
    return llamacpp_speed(hp, sp.tensors, sp.memory, opts, procs, host, fac, req.prompt, depth,
                          groups=sp.tensor_groups)
