"""What llama.cpp allocates on each device: weights, KV cache, compute buffers, runtime reserve.

Exact parts (ported from llama.cpp, src/llama-context.cpp, llama-kv-cache.cpp, llama-model.cpp):
- n_ctx is padded to a multiple of 256; with --parallel N and a non-unified cache each sequence gets
  pad(n_ctx / N, 256) cells and n_ctx becomes N times that.
- KV cache per layer = ggml_row_size(type_k, n_embd_k) * n_ctx (+ the same for V), on the device of the
  layer. deepseek2: "mla" caches the latent K only (kv_lora_rank + rope dims; V is a view of K, since
  llama.cpp PR 19067, Jan 2026); "mla-kv" K latent + V latent (kv_lora_rank), April 2025-January 2026;
  "legacy" (GGUFs with the unsplit attn_kv_b) full per-head K (n_head * (nope + rope)) and V
  (n_head * v_head). qwen2/llama: K and V of n_head_kv * head_dim each.
- Placement (-sm layer): split points = cumulative --tensor-split (or free memory) normalised, in float32;
  layer il (0..n_layer, n_layer = the output layer) goes to the first device whose split point is greater
  than (il - i_gpu_start) / act_gpu_layers; token_embd stays on the host; with -ngl N the first
  n_layer + 1 - N layers stay on the host; --n-cpu-moe N keeps blk.0..N-1 ffn_*_exps on the host.
  RPC devices come first in llama.cpp's device list, then the local GPUs.

Modelled parts (derivation in compute_buffer_bytes; errors against real runs are measured by
bench/bench_memory.py and tests/test_memory_llamacpp.py):
- the compute buffer of each device: the worst-case (prompt-processing, n_ubatch tokens, full cache)
  graph's peak of simultaneously live intermediate tensors, as ggml-alloc reuses memory;
- the host's output buffer (logits of n_seq_max outputs) and the runtime reserve from the profile.
"""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from planner.core.ggml.gguf_constants import GGMLQuantizationType as T

from planner.core.catalog import Hparams
from planner.core.devices.hardware import Slot
from planner.core.ggml.tensor_types import is_quantized, parse_type, row_bytes
from planner.core.llamacpp.regex_match import compile_pattern
from planner.core.plan import DeviceMemory, MemoryPlan, TensorPlan
from planner.errors import PlannerError

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
CTX_PAD = 256


@dataclass(frozen=True)
class MemoryOptions:
    ctx: int = 32768
    kv_mode: str | None = "mla"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = True
    parallel: int = 1
    ubatch: int = 512
    batch: int = 2048
    ngl: int | None = None
    n_cpu_moe: int = 0
    tensor_split: tuple[float, ...] | None = None
    host_capacity_bytes: int = 0
    # llama.cpp -ot PATTERN=BUFFER in order (first match wins, as llama_model::load_tensors applies them);
    # BUFFER is "CPU" (host) or a device's buffer name (the slot label: CUDA0, RPC[host:port], ...)
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    main_gpu: int = 0                 # -mg: the device of every layer under -sm none
    split_mode: str = "layer"         # -sm layer | none (row is not modelled)
    backend: str = "CPU"              # whose compute buffers: CPU (also RPC devices) | CUDA | ROCm (ggml-cuda)
    # llama.cpp since PR 23764 (May 2026, this build) creates the KQ mask graph input in f16 under flash
    # attention; older builds created it f32 and cast it to f16 in the graph (the host input buffer of the
    # published logs of tests/fixtures/cuda_logs: 4 bytes per cell and token)
    mask_f16: bool = True
    # -ngl N counts the output layer first (llama.cpp since PR 18148, December 2025: i_gpu_start = n_layer + 1 - N,
    # so -ngl 5 is the output layer and the last 4 repeating layers); builds before it started at
    # n_layer - N (the last N repeating layers, the output layer only with N > n_layer; those logs print
    # "offloading N repeating layers to GPU" without "offloading output layer"). Same placement with N > n_layer.
    ngl_output_first: bool = True
    # llama.cpp's op offload (on unless --no-op-offload): a GPU backend takes the ops whose weights sit in
    # host memory when the batch has OP_OFFLOAD_MIN_BATCH tokens or more (gpu_compute_buffer_bytes)
    op_offload: bool = True
    # --kv-unified: one KV cache of ctx cells shared by the -np slots (llama_context: n_ctx_seq = n_ctx, one
    # stream, and the worst-case graph is reserved for one sequence over every cell); without it each slot
    # has its own stream of pad(ctx / np, 256) cells
    kv_unified: bool = False

    @property
    def streams(self) -> int:
        """The KV cache's streams: one when unified, else one per slot (-np)."""
        return 1 if self.kv_unified else self.parallel


def cache_type(name: str, which: str) -> T:
    if name.lower() not in CACHE_TYPES:
        raise PlannerError(f"unknown --cache-type-{which} '{name}'; valid: {', '.join(CACHE_TYPES)}")
    return parse_type(name)


def padded_ctx(ctx: int, parallel: int) -> tuple[int, int]:
    """(n_ctx, n_ctx_seq) as llama_context computes them (kv_unified off)."""
    if ctx < 1:
        raise PlannerError(f"context must be at least 1 token, got {ctx}")
    n_ctx = -(-ctx // CTX_PAD) * CTX_PAD
    if parallel <= 1:
        return n_ctx, n_ctx
    n_seq = -(-(n_ctx // parallel) // CTX_PAD) * CTX_PAD
    if n_seq == 0:
        raise PlannerError(f"context {ctx} is too small for {parallel} parallel sequences")
    return n_seq * parallel, n_seq


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def deepseek4_kv_parts(hp: Hparams, opts: MemoryOptions) -> list[dict[str, int]]:
    """Per layer of a deepseek4 model, the bytes of each cache llama_kv_cache_dsv4 allocates
    (src/llama-kv-cache-dsv4.cpp, llama-kv-cache-iswa.cpp, llama-kv-cache.cpp), keyed as llama.cpp logs them:

    - "raw": the sliding-window cache, K only (dsv4_make_k_only), every layer (load_arch_hparams marks all
      of them SWA: set_swa_pattern(0)): pad(min(n_ctx_seq, n_swa + n_ubatch), 256) cells per sequence
      (llama_kv_cache_iswa's size_swa with unified = false: DSV4 keeps one stream per sequence even when
      the public cache is unified), row = head_count_kv * head size in the K type; its non-window part
      has no layers and no bytes;
    - "csa" / "hca": the compressed caches of the 4:1 and 128:1 layers, pad(max(1, ceil(n_ctx_seq /
      ratio)), 256) cells per sequence, the same K rows;
    - "lid": the lightning indexer's key cache of the 4:1 layers, as many cells as csa, one head of
      indexer_head_size;
    - "csa_state" / "hca_state" / "lid_state": the compressors' f32 state (llama_dsv4_comp_state): a kv and
      a score tensor of n_embd_state x state_size x n_seq (n_rs_seq = 0 without speculative decoding):
      4:1 layers 2*head x 8 (and the indexer's 2*indexer_head_size x 8), 128:1 layers head x 128.
    Every part lives on the device of its layer (model.dev_layer(il)).
    """
    tk = cache_type(opts.cache_type_k, "k")
    _, c = padded_ctx(opts.ctx, opts.streams)
    n_seq = max(1, opts.parallel)
    ubatch = min(opts.ubatch, opts.batch)
    head = hp.n_embd_head
    try:
        row = row_bytes(tk, hp.n_head_kv * head)
        row_lid = row_bytes(tk, hp.indexer_head_size)
    except ValueError as e:
        raise PlannerError(f"cache type does not fit this model's rows: {e}") from None
    raw = row * _pad(min(c, hp.n_swa + ubatch), CTX_PAD) * n_seq
    f32 = 4
    out = []
    for il in range(hp.n_layer):
        r = hp.compress_ratios[il]
        parts = {"raw": raw}
        if r:
            cells = _pad(max(1, -(-c // r)), CTX_PAD) * n_seq
            if r == 4:
                parts["csa"] = row * cells
                parts["lid"] = row_lid * cells
                parts["csa_state"] = 2 * f32 * (2 * head) * 8 * n_seq
                parts["lid_state"] = 2 * f32 * (2 * hp.indexer_head_size) * 8 * n_seq
            else:
                parts["hca"] = row * cells
                parts["hca_state"] = 2 * f32 * head * 128 * n_seq
        out.append(parts)
    return out


def kv_bytes_by_layer(hp: Hparams, opts: MemoryOptions) -> list[int]:
    """The KV cache bytes of each layer that has one (see kv_layers), in layer order."""
    if hp.arch == "deepseek4":
        kv_bytes_per_layer(hp, opts)            # the K/V type checks
        return [sum(p.values()) for p in deepseek4_kv_parts(hp, opts)]
    k, v = kv_bytes_per_layer(hp, opts)
    return [k + v] * kv_layers(hp)


def deepseek4_compute_bytes(hp: Hparams, opts: MemoryOptions, n_vocab: int, layers_here: int, has_output: bool,
                            split: bool) -> int:
    """One device's compute buffer for a deepseek4 model (src/models/deepseek4.cpp), the largest of:

      attention: T x (2*n_head*head + 3*n_hc*n_embd + n_embd) floats (the query heads and their output,
                 the hyper-connection streams) + the 4:1 layers' tensors over the compressed cells
                 n_c = pad(ceil(n_ctx_seq / 4), 256): the indexer's and the CSA's f16 masks (graph inputs,
                 2 + 2 bytes per cell and token), the indexer's f32 scores (4) or the rebuilt top-k mask
                 (ggml_fill + ggml_add, 2 + 2) and the concatenated mask (2): 10 bytes per cell and token,
                 plus the concatenated K rows [head, n_raw + n_c] in the cache type (ggml_concat of the
                 window and the compressed cache); without flash attention the KQ scores
                 [n_c, T, n_head] f32 as well;
      output:    n_outputs x (n_vocab + 2*n_embd) floats on the output device (the head reads the
                 hyper-connection mix of one stream: no 5*n_embd of norms as in the other graphs);
      feed-forward: as the other MoE graphs (3*n_ff_exp*n_used + 3*n_expert + 2*n_embd floats per token).

    Read off llama.cpp: real runs of a tiny deepseek4 (CPU, 2K-64K context, n_ubatch 128-512: within 3%)
    and llama-fit-params on the full-scale V4-Flash header (CPU, 4K-1M context, n_ubatch 128-2048: within
    10% from n_ubatch 512, the fit-params figure at 1M and n_ubatch 2048 6366 MiB against 6352; small
    micro-batches at long context are overestimated up to 20%). Split over devices each one adds the
    6*n_embd floats per token of the tensors crossing the split (as the other graphs): llama.cpp's RPC
    devices reserve more than that (recorded by tests/test_newgen_deepseek4.py, not modelled).
    """
    if layers_here == 0 and not has_output:
        return 2 * hp.n_embd * min(padded_ctx(opts.ctx, opts.streams)[0], opts.ubatch) * F32
    n_ctx, n_seq = padded_ctx(opts.ctx, opts.streams)
    t = min(n_ctx, opts.ubatch)
    n_out = min(t, opts.batch)
    e = hp.n_embd
    extra = 6 * e if split else 0
    out = n_out * (n_vocab + (6 if split else 2) * e) * F32 if has_output else 0
    if layers_here == 0:
        return out
    tk = cache_type(opts.cache_type_k, "k")
    n_c = _pad(max(1, -(-n_seq // 4)), CTX_PAD)
    n_raw = _pad(min(n_seq, hp.n_swa + min(opts.ubatch, opts.batch)), CTX_PAD)
    k_all = row_bytes(tk, hp.n_head_kv * hp.n_embd_head) * (n_raw + n_c)
    kq = 0 if opts.flash_attn else n_c * t * hp.n_head * F32
    a = 2 * hp.n_head * hp.n_embd_head + 3 * hp.n_hc * e + e + extra
    attn = t * a * F32 + n_c * t * 10 + k_all + kq + n_raw * t * 2
    ffn = n_c * t * 4 + t * (_ffn_stage_floats(hp) + extra) * F32
    return max(attn, ffn, out)


def kv_dims(hp: Hparams, kv_mode: str | None) -> tuple[int, int]:
    """(K elements, V elements) cached per token per layer (deepseek32: the latent K; see kv_bytes_per_layer
    for its indexer keys)."""
    if hp.arch == "deepseek32":
        return hp.n_lora_kv + hp.n_rot, 0
    if hp.arch == "deepseek4":
        # the raw sliding-window row (K only); the compressed caches are in deepseek4_kv_parts
        return hp.n_head_kv * hp.n_embd_head, 0
    if hp.arch == "deepseek2":
        latent_k = hp.n_lora_kv + hp.n_rot
        if kv_mode == "mla":
            return latent_k, 0
        if kv_mode == "mla-kv":
            return latent_k, hp.n_lora_kv
        if kv_mode == "legacy":
            return hp.n_head * (hp.n_embd_head_qk_nope + hp.n_rot), hp.n_head * hp.n_embd_head_v
        raise PlannerError(f"unknown KV mode '{kv_mode}'; valid: mla, mla-kv, legacy")
    d = hp.n_head_kv * hp.n_embd_head
    return d, d


def kv_bytes_per_layer(hp: Hparams, opts: MemoryOptions) -> tuple[int, int]:
    """(K bytes, V bytes) of one layer's cache at the padded context."""
    tk = cache_type(opts.cache_type_k, "k")
    tv = cache_type(opts.cache_type_v, "v")
    if is_quantized(tv) and not opts.flash_attn:
        raise PlannerError("a quantized V cache needs flash attention (llama.cpp refuses -ctv "
                           f"{opts.cache_type_v} with -fa off): use --flash-attn on or auto")
    if ((hp.arch == "deepseek2" and opts.kv_mode == "mla") or hp.arch in ("deepseek32", "deepseek4")) and tk != tv:
        # llama_init_from_model: "model does not support different K and V cache types" (is_mla() or deepseek4)
        raise PlannerError(f"MLA models need one cache type for K and V (llama.cpp refuses -ctk {opts.cache_type_k} "
                           f"-ctv {opts.cache_type_v}): set both --cache-type-k and --cache-type-v")
    kd, vd = kv_dims(hp, opts.kv_mode)
    n_ctx, _ = padded_ctx(opts.ctx, opts.streams)
    try:
        k = row_bytes(tk, kd) * n_ctx
        v = row_bytes(tv, vd) * n_ctx if vd else 0
        if hp.arch == "deepseek32":
            # llama_kv_cache_dsa: the MLA cache (K only) plus the lightning indexer's key cache, a second
            # llama_kv_cache of one head of indexer_head_size in the K type, same cells (src/llama-kv-cache-dsa.cpp)
            k += row_bytes(tk, hp.indexer_head_size) * n_ctx
    except ValueError as e:
        raise PlannerError(f"cache type does not fit this model's rows: {e}") from None
    return k, v


def not_loaded(name: str, il: int, hp: Hparams) -> bool:
    """A tensor llama.cpp does not load: the NextN/MTP block's (deepseek32 creates them TENSOR_SKIP unless
    MTP speculative decoding is on; its exp_probs_b bias is created without the MTP flags and is loaded)."""
    return _skipped(name, il, hp.n_layer, hp.n_layer_nextn)


def _skipped(name: str, il: int, n_layer: int, n_layer_nextn: int) -> bool:
    return n_layer_nextn > 0 and n_layer - n_layer_nextn <= il < n_layer and not name.endswith("exp_probs_b.bias")


def kv_layers(hp: Hparams) -> int:
    """Layers with a KV cache: every block but the NextN/MTP ones (deepseek32's main context caches the
    trunk only: filter_mla / filter_lid, il < n_layer(), src/llama-model.cpp)."""
    return hp.n_layer - hp.n_layer_nextn


def kv_cache_bytes(hp: Hparams, opts: MemoryOptions) -> int:
    return sum(kv_bytes_by_layer(hp, opts))


# ---------------------------------------------------------------------------------------------------
# placement

_BLK = re.compile(r"^blk\.(\d+)\.")


@lru_cache(maxsize=None)
def tensor_layer(name: str, n_layer: int) -> int:
    """The llama.cpp layer a tensor belongs to: blk.N -> N, output/output_norm -> n_layer, rope_freqs -> 0
    (LLM_TENSOR_LAYER_REPEATING, created with block 0: the device of layer 0), else -1 (input)."""
    m = _BLK.match(name)
    if m:
        return int(m.group(1))
    if name.startswith("output"):
        return n_layer
    if name.startswith("rope_freqs"):
        return 0
    return -1


@lru_cache(maxsize=None)
def tensor_site(name: str, n_layer: int, n_layer_nextn: int) -> tuple[int, bool, bool]:
    """Where llama.cpp puts a tensor, computed once per name: (its layer as tensor_layer says, whether it is a
    routed-expert tensor of a block (what --n-cpu-moe keeps on the host), whether llama.cpp loads it).
    Every scheme of a model has the same names, so sizing, placement and speed share these answers."""
    il = tensor_layer(name, n_layer)
    if il < 0:
        return il, False, True
    return il, il < n_layer and ROUTED_EXPERTS.search(name) is not None, not _skipped(name, il, n_layer, n_layer_nextn)


def layer_devices(n_layer: int, n_devices: int, splits: list[float], ngl: int | None,
                  output_first: bool = True) -> list[int]:
    """Device index of layers 0..n_layer (the last is the output layer); -1 = host. llama.cpp's float32 math.
    output_first=False: the -ngl of builds before llama.cpp PR 18148 (MemoryOptions.ngl_output_first)."""
    return list(_layer_devices(n_layer, n_devices, tuple(splits), ngl, output_first))


@lru_cache(maxsize=256)
def _layer_devices(n_layer: int, n_devices: int, splits: tuple[float, ...], ngl: int | None,
                   output_first: bool = True) -> tuple[int, ...]:
    """layer_devices, once per split: every scheme of a plan places its layers the same way."""
    n_gpu_layers = n_layer + 1 if ngl is None else ngl
    if n_devices == 0:
        return (-1,) * (n_layer + 1)
    # float32 as in llama.cpp: every sum and quotient rounded to single precision (a double result of
    # float32 operands rounds to the same float32 as the single-precision operation)
    cum: list[float] = []
    acc = 0.0
    for x in splits:
        acc = _f32(acc + _f32(x))
        cum.append(acc)
    cum = [_f32(c / acc) for c in cum]
    # before PR 18148: i_gpu_start = max(n_layer - n_gpu_layers, 0), act_gpu_layers unchanged
    i_gpu_start = max(n_layer + (1 if output_first else 0) - n_gpu_layers, 0)
    act = min(n_gpu_layers, n_layer + 1)
    out = [-1] * (n_layer + 1)
    for il in range(i_gpu_start, min(n_layer + 1, i_gpu_start + act)):
        out[il] = min(bisect.bisect_right(cum, _f32((il - i_gpu_start) / act)), n_devices - 1)
    return tuple(out)


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """x rounded to float32."""
    return _F32.unpack(_F32.pack(x))[0]


# llama.cpp's LLM_FFN_EXPS_REGEX (src/llama-model.h): the routed-expert tensors, what --cpu-moe and
# --n-cpu-moe keep on the host
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
ROUTED_EXPERTS = re.compile(FFN_EXPS_REGEX)


# ---------------------------------------------------------------------------------------------------
# compute buffers

F32 = 4


def _attention_stage_floats(hp: Hparams, kv_mode: str | None, fa: bool, t: int) -> int:
    """Floats per token alive at the attention peak of one layer, besides the mask and KQ scores."""
    e, h = hp.n_embd, hp.n_head
    if hp.arch in ("deepseek2", "deepseek32"):
        r, n = hp.n_rot, hp.n_embd_head_qk_nope
        if kv_mode == "legacy":
            v = hp.n_embd_head_v
            # legacy path (attn_kv_b decompressed to per-head K and V)
            return 5 * e + h * (4 * (n + r) + r) if fa else 5 * e + 2 * h * (n + r + v)
        # MLA path: q, the absorbed q_nope, the concatenated Q [kv_lora + rope, H], the latent output
        l_kv = hp.n_lora_kv
        return 5 * e + h * (2 * l_kv + 3 * r + n)
    if fa:
        # q/k/v bias additions (qwen2) write new tensors next to the projections
        bias = h * hp.n_embd_head + 2 * hp.n_head_kv * hp.n_embd_head if hp.qkv_bias else 0
        return 5 * e + 2 * h * hp.n_embd_head + bias
    # the batch's K and V rows [n_head_kv * head_dim, T] live next to the scores
    return 6 * e + 2 * hp.n_head_kv * hp.n_embd_head


def _ffn_stage_floats(hp: Hparams) -> int:
    if hp.is_moe:
        moe = 3 * hp.n_ff_exp * hp.n_expert_used + 3 * hp.n_expert + 2 * hp.n_embd
        return moe
    return 5 * hp.n_ff + hp.n_embd


def _dsa_attention_bytes(hp: Hparams, fa: bool, n_kv: int, t: int, masks: int, a: int, layers: int,
                         n_stream: int) -> int:
    """The attention peak of a deepseek32 layer (DeepSeek Sparse Attention: src/models/deepseek32.cpp and
    llm_graph_context::build_attn for llm_graph_input_attn_k_dsa in src/llama-graph.cpp), in bytes.

    Read off llama.cpp's own allocation: ggml-alloc's offsets of every tensor of the reserved graph
    (ggml_gallocr_reserve_n / _size, build 11434, CPU backend; tiny generated models and the full-scale
    V3.2 header over loopback RPC devices). The layer runs as the deepseek2 MLA layer up to Qcur, whose
    peak the deepseek2 model's `a` floats per token already hold: the residual and norms (5*n_embd), q
    [H*(nope+rope)], the absorbed q [H*kv_lora], q_pe [H*rope] and Qcur [H*(kv_lora+rope)]; what it adds:

    - the masks (`masks`): the MLA mask [n_kv, T] (f16 with flash attention, f32 without) and the
      indexer's own mask, f16 (the fused lightning indexer, cparams.fused_lid, on in this build, needs it):
      graph inputs, alive through every layer;
    - the top-k "zeros" [1, top_k, T] f32 of every layer are graph leafs: ggml-alloc allocates them all
      before the first node and frees each after its layer's ggml_fill, so a device's first layer holds
      those of its other (layers - 1) layers (the NextN block is not in the graph);
    - after Qcur, q and the absorbed q + q_pe are dead: two free blocks of H*(nope+rope) and
      H*(kv_lora+rope) floats per token below Qcur. The rest of the layer allocates, in graph order:
      without flash attention the contiguous latent V copy [kv_lora, n_kv] f16 per stream and KQ
      [n_kv, T, H] f32 (then Qcur is dead too); the zeros' ggml_fill [top_k, T]; indexer_q [ih*ihs, T],
      its rope and Hadamard product (two alive at a time); the weights [ih, T]; the fused indexer's scores
      [n_kv, T] f32; ggml_top_k [top_k, T] i32 and its ggml_cont; the sparse mask: ggml_fill of the MLA
      mask and ggml_add with it ([n_kv, T] each, the MLA mask's type, set_rows a view in between); then
      the flash-attention output [kv_lora, H, T] f32 (without flash attention the soft_max is in place and
      KQV [kv_lora, H, T] follows).
    _dsa_layer_tail replays that sequence with ggml_dyn_tallocr's rules (best fit among the free blocks
    but the last, else the last block, which grows; freed blocks merge with their neighbours): the peak
    is the highest end it reaches. At full scale the flash-attention output (128 MiB) no longer fits the
    absorbed q's block, which the sparse mask took part of, and goes on top. The zeros of (layers - 1)
    layers are an upper bound where the peak falls on a later layer (llama.cpp's layout peaks on the
    sixth layer of a V3.2 device: up to 5 x 4 MiB fewer). tests/test_newgen_dsa_compute.py measures the
    rest against llama.cpp: within 3% of llama-fit-params on the full-scale header (8K-128K cells, flash
    attention on and off), a median of 1-2% on tiny generated models.
    """
    z = max(0, layers - 1) * min(hp.indexer_top_k, n_kv) * t * F32
    base_top = masks + t * a * F32 + z             # the Qcur peak
    return _dsa_layer_tail(hp, fa, n_kv, t, base_top, n_stream)


def _dsa_layer_tail(hp: Hparams, fa: bool, n_kv: int, t: int, base_top: int, n_stream: int) -> int:
    """ggml_dyn_tallocr replayed over a deepseek32 layer's tensors after Qcur (see _dsa_attention_bytes)."""
    ih, ihs, k = hp.indexer_n_head, hp.indexer_head_size, min(hp.indexer_top_k, n_kv)
    h, l, r = hp.n_head, hp.n_lora_kv, hp.n_rot
    inf = 1 << 62
    qcur = t * h * (l + r) * F32
    q_blk, abs_blk = t * h * (hp.n_embd_head_qk_nope + r) * F32, t * h * (l + r) * F32
    # [q] x [absorbed q, q_pe] [Qcur] | the last block (the end, it grows)
    blocks = [[base_top - qcur - abs_blk - q_blk - 1, q_blk], [base_top - qcur - abs_blk, abs_blk], [base_top, inf]]
    at = {"qcur": (base_top - qcur, qcur)}
    peak = base_top

    def alloc(name: str, size: int) -> None:
        nonlocal peak
        fit = None
        for b in blocks[:-1]:
            if b[1] >= size and (fit is None or b[1] <= fit[1]):
                fit = b
        b = fit if fit is not None else blocks[-1]
        at[name] = (b[0], size)
        b[0] += size
        b[1] -= size
        if b is not blocks[-1] and b[1] == 0:
            blocks.remove(b)
        peak = max(peak, at[name][0] + size)

    def free(name: str) -> None:
        blocks.append(list(at.pop(name)))
        blocks.sort()
        merged = [blocks[0]]
        for b in blocks[1:]:
            m = merged[-1]
            if m[0] + m[1] == b[0]:
                m[1] = inf if b[1] >= inf // 2 else m[1] + b[1]
            else:
                merged.append(b)
        blocks[:] = merged

    mask_el = 2 if fa else F32
    steps: list[tuple[str, int]] = []
    if not fa:
        steps += [("v_cont", n_kv * l * 2 * n_stream), ("kq", n_kv * t * h * F32), ("-qcur", 0)]
    steps += [("fill_zeros", t * k * F32), ("indexer_q", t * ih * ihs * F32), ("indexer_q_rope", t * ih * ihs * F32),
              ("-indexer_q", 0), ("indexer_q_hadamard", t * ih * ihs * F32), ("-indexer_q_rope", 0),
              ("weights", t * ih * F32), ("scores", n_kv * t * F32), ("-indexer_q_hadamard", 0), ("-weights", 0),
              ("top_k", t * k * 4), ("-scores", 0), ("top_k_cont", t * k * 4), ("-top_k", 0),
              ("mask_fill", n_kv * t * mask_el), ("mask_add", n_kv * t * mask_el), ("-mask_fill", 0),
              ("-fill_zeros", 0), ("-top_k_cont", 0)]
    if fa:
        steps += [("fa_out", t * h * l * F32), ("-mask_add", 0)]
    else:
        steps += [("-mask_add", 0), ("kqv", t * h * l * F32), ("-kq", 0), ("-v_cont", 0)]
    for name, size in steps:
        if name.startswith("-"):
            free(name[1:])
        else:
            alloc(name, size)
    return peak


def compute_buffer_bytes(hp: Hparams, opts: MemoryOptions, n_vocab: int, layers_here: int,
                         has_output: bool, has_input: bool, n_devices: int = 1, *, pipeline: bool = True,
                         first: bool = False) -> int:
    """Bytes of one device's compute buffer in llama.cpp's worst-case graph (0 if it holds nothing).

    llama.cpp reserves the prompt-processing graph with n_tokens T = min(n_ctx, n_ubatch), every cache
    cell in use (n_kv = cells per sequence) and min(T, n_batch) outputs; ggml-alloc reuses memory once a
    tensor's last consumer ran, so the buffer is the largest set of tensors alive at one time. It grows
    exactly linearly with T (checked for n_ubatch 128..2048) and is the largest of three stages:

      attention: the KQ mask [n_kv, T] (f16 with flash attention, f32 without) + without flash
                 attention the KQ scores [n_kv, T, n_head] f32 + T x a(arch) floats, where a is
                   deepseek2 MLA      5*n_embd + n_head*(2*kv_lora + 3*rope + nope)
                   deepseek2 legacy   5*n_embd + 2*n_head*(nope + rope + v_head)    (no FA)
                                      5*n_embd + n_head*(4*(nope + rope) + rope)     (FA)
                   dense              6*n_embd + 2*n_head_kv*head_dim (no FA);  5*n_embd + 2*n_head*head_dim
                                      (FA; + n_head*head_dim + 2*n_head_kv*head_dim with q/k/v biases)
                 and, for MLA without flash attention, a contiguous f16 copy of the transposed latent V
                 (n_kv x kv_lora), which does not grow with T;
      feed-forward: the mask (a graph input, alive until the last layer's attention) +
                    T x (3*n_ff_exp*n_expert_used + 3*n_expert + 2*n_embd) for MoE layers,
                    T x (5*n_ff + n_embd) for dense ones;
      output: T x (n_vocab + 5*n_embd) floats (logits and the final norm), on the output device.

    Split over several devices with pipeline parallelism (`pipeline`: llama_context turns it on with more
    than one device, every layer offloaded, -sm layer and no tensor overrides; ggml_backend_sched then keeps
    4 copies of every split input), every device keeps its own copies of the graph inputs and of the
    tensors crossing the split: the mask costs 8 bytes per cell and token with flash attention (16
    without), each stage 6*n_embd more floats per token (4*n_embd at the output; the `first` device, which
    receives the token embeddings, 5*n_embd more), and the host (input split, token embedding rows) needs
    T x 10*n_embd floats plus the mask.

    Split without pipeline parallelism (-ot, --n-cpu-moe, layers left on the host; one copy of each split
    input), a device holds one copy of the mask (2 bytes per cell and token with flash attention, 4
    without) and only its own layers' tensors: the attention stage is the single-device one less
    2*n_embd floats per token (the first device: less n_embd, it holds the embeddings copy), a dense
    feed-forward stage is T x (3*n_ff + 2*n_embd) (gate, up and their product, the residual and the norm;
    the first device 2*n_embd more; with pipeline parallelism 3*n_ff + 11*n_embd, first device 5*n_embd
    more, and the mask copies are alive at the output stage too), a MoE one the single-device one less 2*n_embd, the output stage
    T x (n_vocab + n_embd) on the last device, and the host's input split T x 4*n_embd floats (+ the
    batch's K and V rows without flash attention, dense models) plus the mask. Read off llama-fit-params
    (build 11434, CPU backend over 1-4 loopback RPC devices with a tensor override that moves nothing) on
    DeepSeek-V3-0324 UD-Q2_K_XL, R1-Distill-Llama-70B and R1-Distill-Qwen-32B Q4_K_M, n_ubatch 512-2048,
    2048-32768 cells, flash attention on and off: exact to the MiB on the middle devices (788 MiB for the
    published 4-GPU V3-0324 run of tests/fixtures/cuda_logs, which logged 788.00).

    The coefficients were read off llama.cpp's own estimator (llama-fit-params, llama.cpp build 11434,
    CPU backend, sparse GGUFs of DeepSeek-R1/V2/V2-Lite in both layouts and of the R1-Distill models);
    bench/bench_memory.py measures the remaining error against it and against real runs. deepseek32 adds the
    lightning indexer's mask (a second f16 graph input) and the rest of its layer (_dsa_attention_bytes).
    CUDA (and ROCm)
    devices: gpu_compute_buffer_bytes and host_compute_buffer_bytes, checked against published runs by
    bench/bench_cuda_logs.py.
    """
    if layers_here == 0 and not has_output and not has_input:
        return 0
    n_ctx, n_seq = padded_ctx(opts.ctx, opts.streams)
    t = min(n_ctx, opts.ubatch)
    n_kv = n_seq
    n_out = min(t, opts.batch)
    if hp.arch == "deepseek4":
        return deepseek4_compute_bytes(hp, opts, n_vocab, layers_here, has_output, n_devices > 1)
    e = hp.n_embd
    split = n_devices > 1
    pp = split and pipeline                  # 4 copies of each split input
    mask_cell = (8 if opts.flash_attn else 16) if pp else (2 if opts.flash_attn else F32)
    mask = n_kv * t * mask_cell
    if hp.arch == "deepseek32":
        # the lightning indexer's own mask [n_kv, T]: a second graph input, f16 (the fused indexer needs it)
        mask += n_kv * t * (8 if pp else 2)
    mla = hp.arch in ("deepseek2", "deepseek32")
    if layers_here == 0:
        if has_output:
            return n_out * (n_vocab + (9 if pp else 1 if split else 5) * e) * F32
        if pp:
            return t * 10 * e * F32 + mask
        if split:
            rows = 0 if opts.flash_attn or mla else 2 * hp.n_head_kv * hp.n_embd_head
            return t * (4 * e + rows) * F32 + mask
        return 2 * e * t * F32
    extra = 6 * e + (5 * e if first else 0) if pp else (-2 * e + (e if first else 0)) if split else 0
    kq = 0 if opts.flash_attn else n_kv * t * hp.n_head * F32
    if not opts.flash_attn and hp.arch in ("deepseek2", "deepseek32") and opts.kv_mode != "legacy":
        kq += n_kv * hp.n_lora_kv * 2      # contiguous f16 copy of the transposed latent V view
    attn = mask + kq + t * (_attention_stage_floats(hp, opts.kv_mode, opts.flash_attn, t) + extra) * F32
    if hp.arch == "deepseek32":
        attn = _dsa_attention_bytes(hp, opts.flash_attn, n_kv, t, mask,
                                    _attention_stage_floats(hp, opts.kv_mode, opts.flash_attn, t) + extra,
                                    layers_here, max(1, opts.streams))
    # the mask is a graph input: alive until the last layer's attention, so through every FFN but the last
    ffn = mask + t * (_ffn_stage_floats(hp) + extra) * F32
    if split and not pp:
        ffn_floats = (_ffn_stage_floats(hp) - 2 * e if hp.is_moe else 3 * hp.n_ff + 2 * e) + (2 * e if first else 0)
        ffn = mask + t * ffn_floats * F32
    elif pp and not hp.is_moe:
        ffn = mask + t * (3 * hp.n_ff + 11 * e + (5 * e if first else 0)) * F32
    peak = max(attn, ffn)
    if has_output:
        # with pipeline parallelism the mask copies are never reused: alive at the output stage too
        peak = max(peak, n_out * (n_vocab + (9 if pp else 1 if split else 5) * e) * F32 + (mask if pp else 0))
    return peak


GPU_BACKENDS = ("CUDA", "ROCm")        # ggml-cuda (ROCm builds the same code with HIP)
SCHED_MAX_COPIES = 4                    # GGML_SCHED_MAX_COPIES: pipeline parallelism's input copies
# ggml-cuda offloads an op on host-resident weights to the GPU when the batch has at least 32 tokens
# (ggml_backend_cuda_device_offload_op: min_batch_size = 32)
OP_OFFLOAD_MIN_BATCH = 32


def _inputs_bytes(hp: Hparams, opts: MemoryOptions, n_copies: int = 1) -> int:
    """The graph inputs llama.cpp keeps in the host (CPU, CUDA_Host) buffer while the layers run on GPUs:
    the KQ mask [n_kv, T] (f16 with flash attention since llama.cpp PR 23764, May 2026; f32 before it and
    without flash attention: opts.mask_f16), the token ids and positions (T int32 each) and the output ids,
    each in `n_copies` copies (ggml_backend_sched copies every tensor flagged as a graph input once per
    pipeline copy), and the token embeddings gathered on the host once (token_embd stays there and
    GET_ROWS is never offloaded: [n_embd, T] f32; its result is no graph input). Checked on the published
    runs: T x (n_kv + n_embd) x 4 (+ 12 bytes per token) with one copy (R1-Distill-Qwen-32B 42.01 MiB,
    V3-0324 92.01 MiB, R1-Distill-Llama-8B 24.01 MiB), 4 x T x n_kv x 4 + T x n_embd x 4 with pipeline
    parallelism (R1-Distill-Llama-70B over 3 GPUs, 80.02 MiB)."""
    n_ctx, n_seq = padded_ctx(opts.ctx, opts.streams)
    t = min(n_ctx, opts.ubatch)
    n_out = min(t, opts.batch)
    mask = n_seq * t * (2 if opts.flash_attn and opts.mask_f16 else F32)
    lid = n_seq * t * 2 if hp.arch == "deepseek32" else 0    # deepseek32: the indexer's f16 mask as well
    return (mask + lid + 2 * t * 4 + n_out * 4) * n_copies + t * hp.n_embd * F32


def pipeline_parallel(n_used: int, all_layers_on_devices: bool, opts: MemoryOptions) -> bool:
    """llama_context's condition for pipeline parallelism (n_copies = 4 in ggml_backend_sched): more than
    one device, every layer (the output included) offloaded, -sm layer, the KV cache offloaded, and no
    tensor overrides (-ot, --n-cpu-moe and --cpu-moe are overrides)."""
    return (n_used > 1 and all_layers_on_devices and opts.split_mode == "layer"
            and not opts.tensor_overrides and not opts.n_cpu_moe)


@dataclass(frozen=True)
class HostCopies:
    """The host weights the first GPU copies into its compute buffer under op offload, by what is alive
    beside each copy (plan_memory sorts them; bytes of the largest 2-D host tensor of a layer):

      with_attention: a layer whose attention this GPU computes just before the copy (a layer of its
                      own whose experts are in host memory, or a host layer whose ops are offloaded);
      kv:             with a host layer, the K and V cache views of that layer, copied in for its
                      attention (its cache sits in host memory);
      with_mask:      a layer of another device, while this GPU still has layers to come (the mask copy
                      is alive until its last attention);
      alone:          a layer of another device after this GPU's own layers (or the output layer)."""

    with_attention: int = 0
    kv: int = 0
    with_mask: int = 0
    alone: int = 0

    def __bool__(self) -> bool:
        return bool(self.with_attention or self.with_mask or self.alone)


def offloads_ops(opts: MemoryOptions) -> bool:
    """Whether a GPU backend computes the ops of host weights in the reserved graph: op offload on
    (no --no-op-offload) and T = min(n_ctx, n_ubatch) tokens of at least OP_OFFLOAD_MIN_BATCH (ggml-cuda's
    offload_op compares the op's batch, ne[2] of a MUL_MAT_ID, ne[1] of a MUL_MAT, with it)."""
    n_ctx, _ = padded_ctx(opts.ctx, opts.streams)
    return opts.op_offload and min(n_ctx, opts.ubatch) >= OP_OFFLOAD_MIN_BATCH


def _copy_operands_bytes(hp: Hparams, t: int) -> int:
    """What the op reading a copied host weight keeps alive beside it: for an expert tensor (MUL_MAT_ID,
    the largest is a down_exps) its input [n_ff_exp, n_expert_used, T] and output [n_embd, n_expert_used, T]
    f32, the residual and the norm (2*n_embd); a dense weight sits with the feed-forward stage's activations."""
    if hp.is_moe:
        return t * (hp.n_expert_used * (hp.n_ff_exp + hp.n_embd) + 2 * hp.n_embd) * F32
    return t * _ffn_stage_floats(hp) * F32


def gpu_compute_buffer_bytes(hp: Hparams, opts: MemoryOptions, n_vocab: int, layers_here: int, has_output: bool,
                             n_devices: int, *, host_copies: HostCopies = HostCopies(), pipeline: bool = True,
                             first: bool = False) -> int:
    """One CUDA (or ROCm) device's compute buffer, from llama.cpp's graph reservation on that backend.

    ggml-alloc and the graph are the ones of the CPU backend (compute_buffer_bytes), so the attention
    and feed-forward stages are the same; what the CUDA backend allocates differently:

    - the output stage is T x (n_vocab + n_embd) floats: the graph inputs (token embeddings, mask,
      positions) sit in the CUDA_Host buffer, not beside the logits (checked exactly, 307.00 MiB, on the
      published R1-Distill-Qwen-32B run of tests/fixtures/cuda_logs);
    - with pipeline parallelism (several devices, every layer offloaded, no overrides) the scheduler
      keeps 4 copies of each split input (the hidden state [n_embd, T] f32 and the f16 mask) on each
      device, never reused by ggml-alloc. The multi-device terms of compute_buffer_bytes hold them: they
      were read off llama-fit-params over RPC devices, where llama.cpp enables pipeline parallelism too
      (8 bytes per mask cell are 4 f16 copies); without it (`pipeline` False: -ot, host layers) its
      one-copy terms apply (788 MiB on the published 4-GPU V3-0324 run, as logged);
    - op offload (`host_copies`, the first GPU only; none with --no-op-offload or T < 32). Derived from
      ggml/src/ggml-backend.cpp (ggml_backend_sched_split_graph, ggml_backend_sched_backend_id_from_cur)
      and ggml-alloc.c:
        1. pass 1 gives an op the backend of its weight; for a weight in a host buffer it first asks
           the backends of higher priority, in device order, whether they offload it
           (ggml_backend_offload_op: ggml-cuda says yes for a batch of 32 tokens or more), so every op
           on a host weight runs on the first CUDA device (RPC devices never offload);
        2. a source that is a weight on an incompatible backend starts a new split ("by starting a new
           split, the memory of the previously offloaded weights can be reused") and becomes that
           split's input: a copy of the whole tensor (ggml_dup_tensor_layout, same type and size) in
           the device's compute buffer, allocated by ggml-alloc at the start of the split (the graph
           copy lists it before the split's nodes) and freed after its one consumer: one weight copy is
           alive at a time, so the largest host weight sets the peak;
        3. beside it: the operands of the op (_copy_operands_bytes) and what outlives the copy's split.
           When this GPU has just computed the attention of the same layer (its own layer, or a host
           layer whose ops are offloaded: HostCopies.with_attention), the attention stage reached the
           device's high-water and was freed around the tensors that outlive it (the residual, the
           experts' input); a copy larger than every freed block goes where ggml_dyn_tallocr puts an
           allocation no free block fits, at the end, above that high-water: the device's own peak
           (`base`) + the copy + its operands, and for a host layer the K and V views of its host cache
           that its attention read (HostCopies.kv). A copy of another device's layer needs no such
           room: the copy and its operands, with the mask while this device has layers to come.
      Checked on the published runs of tests/fixtures/cuda_logs: DeepSeek-V3 Q3_K_M, -ngl 5 (56 host
      layers computed on CUDA0): 1234 + 194 (legacy K q5_0 + V f16 of a host layer) + 2016 (a q4_K
      down_exps) + 172 MiB = 3616 against the logged 3630.00 (-0.4%); DeepSeek-V3-0324 UD-Q2_K_XL over
      4 GPUs with the experts of blocks 27-60 in host memory (other devices' layers, after CUDA0's own):
      a copy + 344 MiB of operands against the logged 3285.00, which a q6_K down_exps (2940 MiB) makes
      3284 (that file's per-tensor types were not published: not scored).
    """
    base = compute_buffer_bytes(hp, opts, n_vocab, layers_here, False, False, n_devices, pipeline=pipeline,
                                first=first)
    n_ctx, n_kv = padded_ctx(opts.ctx, opts.streams)
    t = min(n_ctx, opts.ubatch)
    n_out = min(t, opts.batch)
    e = hp.n_embd
    peak = base
    if has_output:
        peak = max(peak, n_out * (n_vocab + e) * F32)
    if host_copies and offloads_ops(opts):
        # host weights mean no pipeline parallelism: one copy of everything
        ops = _copy_operands_bytes(hp, t)
        mask = n_kv * t * (2 if opts.flash_attn else F32)
        if host_copies.with_attention:
            peak = max(peak, base + host_copies.kv + host_copies.with_attention + ops)
        if host_copies.with_mask:
            peak = max(peak, mask + host_copies.with_mask + ops)
        if host_copies.alone:
            peak = max(peak, host_copies.alone + ops)
    return peak


def _host_experts_bytes(hp: Hparams, t: int) -> int:
    """The CPU backend's tensors for host weights it computes itself, for layers whose other ops run on a
    device (--no-op-offload, fewer than 32 tokens, or devices that never offload: RPC). The scheduler
    copies the experts' input [n_embd, T] and the selected ids [n_expert_used, T] i32 in (split inputs);
    the CPU computes the up and gate products [n_ff_exp, n_expert_used, T] f32, their GLU, and the down
    product [n_embd, n_expert_used, T]; the weighting and the sum over experts have no weight and follow
    the next device op (pass 2 of ggml_backend_sched_split_graph expands device backends first), so the
    down product goes back as a split input. Planned: the two that must coexist, the GLU and the down
    product, with the ids: T x (n_ff_exp + n_embd + 1) x n_expert_used x 4 bytes beside the graph inputs.
    Measured against llama-fit-params (build 11434, CPU backend with one loopback RPC device, -ot exps=CPU:
    the CPU computes the experts, as with --no-op-offload), -ub 512, 8192 cells: DeepSeek-V2-Lite Q4_K_M
    host 64.5 MiB planned, 65 estimated (-1%); V2 126 vs 142 (-11%); R1 208 vs 244 (-15%): where the
    down product outgrows the freed up and gate blocks ggml-alloc places it above them, which this
    lower bound does not follow (tests/test_cuda_logs.py). A dense model's host feed-forward keeps its
    stage's activations (_ffn_stage_floats)."""
    if hp.is_moe:
        return t * (hp.n_ff_exp + hp.n_embd + 1) * hp.n_expert_used * F32
    return t * _ffn_stage_floats(hp) * F32


def host_compute_buffer_bytes(hp: Hparams, opts: MemoryOptions, n_vocab: int, host_layers: int, has_output: bool,
                              n_devices: int, *, n_copies: int = 1, op_offload: bool = False,
                              host_weights: bool = False) -> int:
    """The CUDA_Host compute buffer: the graph inputs (_inputs_bytes; the published pattern
    n_ubatch x (n_ctx + n_embd) x 4 bytes is their two large terms), times the pipeline copies, and,
    for layers left on the host, the CPU backend's activations of those layers. `op_offload`: some layers
    sit on a GPU that takes the ops of host weights (with -ngl 0 the CPU backend's figure is kept, which
    the CPU-only runs of tests/test_memory_llamacpp.py check); `host_weights`: weights of GPU layers in
    host memory (-ot ...=CPU, --n-cpu-moe), which the CPU backend computes itself when the GPU does not
    take them (--no-op-offload, or fewer than 32 tokens)."""
    inputs = _inputs_bytes(hp, opts, n_copies)
    n_ctx, _ = padded_ctx(opts.ctx, opts.streams)
    t = min(n_ctx, opts.ubatch)
    offload = op_offload and offloads_ops(opts)
    if host_layers == 0 and not has_output:
        return inputs + (_host_experts_bytes(hp, t) if host_weights and not offload else 0)
    if offload:
        # the host layers' ops run on the first GPU (ggml_backend_sched op offload: ggml-cuda takes ops of
        # at least 32 rows whose weights sit in host memory, and the scheduler extends that GPU's splits
        # over the ops between them); what stays on the CPU backend is the cache store of those layers
        # (the CPY into their host K and V cache), which reads a copy of the batch's K and V rows, f32
        # [k + v elements, T], one layer at a time, beside the mask; the token embeddings are dead by then
        # (their one consumer is the copy to the GPU). Published run: DeepSeek-V3 Q3_K_M, -ngl 5 of 61
        # layers, legacy cache (24576 + 16384 elements), -ub 512, 4096 cells: 8 + 80 MiB + the ids, 88.01
        # MiB as logged (tests/fixtures/cuda_logs).
        kd, vd = kv_dims(hp, opts.kv_mode)
        return max(inputs, inputs - t * hp.n_embd * F32 + t * (kd + vd) * F32)
    return max(inputs, compute_buffer_bytes(hp, opts, n_vocab, host_layers, has_output, True, n_devices,
                                            pipeline=n_copies > 1))


# ---------------------------------------------------------------------------------------------------
# the whole device plan


@dataclass
class Placement:
    layer_device: list[int]                       # layers 0..n_layer -> device index or -1 (host)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LayerWeights:
    """A scheme's weight bytes per llama.cpp layer (0..n_layer, the last is the output layer), what stays
    on the host whatever the placement (token_embd), and the expert bytes per layer (for --n-cpu-moe);
    the largest matrix and the largest expert tensor of each layer (what a CUDA device copies in when it
    computes with host weights)."""

    per_layer: tuple[int, ...]
    host: int
    experts: tuple[int, ...]
    largest: tuple[int, ...] = ()
    largest_expert: tuple[int, ...] = ()

    @classmethod
    def of(cls, hp: Hparams, tensors: list[TensorPlan]) -> "LayerWeights":
        per = [0] * (hp.n_layer + 1)
        exps = [0] * (hp.n_layer + 1)
        big = [0] * (hp.n_layer + 1)
        big_exp = [0] * (hp.n_layer + 1)
        host = 0
        n_layer, n_nextn = hp.n_layer, hp.n_layer_nextn
        for tp in tensors:
            il, expert, loaded = tensor_site(tp.name, n_layer, n_nextn)
            b = tp.bytes
            if il < 0:
                host += b
                continue
            if not loaded:
                continue
            per[il] += b
            if b > big[il] and len(tp.shape) >= 2:
                big[il] = b
            if expert:
                exps[il] += b
                if b > big_exp[il]:
                    big_exp[il] = b
        return cls(tuple(per), host, tuple(exps), tuple(big), tuple(big_exp))


def override_rules(opts: MemoryOptions, labels: list[str]) -> list[tuple[re.Pattern[str], int]]:
    """-ot rules as (compiled pattern, device index into `labels`, the devices' buffer names; -1 = host),
    checked as llama.cpp's parser checks them."""
    by_label = {label: i for i, label in enumerate(labels)}
    out = []
    for pat, buft in opts.tensor_overrides:
        if buft == "CPU":
            di = -1
        elif buft in by_label:
            di = by_label[buft]
        elif re.sub(r"^RPC\d+\[", "RPC[", buft) in by_label:     # ggml-rpc names buffers RPC<dev>[host:port]
            di = by_label[re.sub(r"^RPC\d+\[", "RPC[", buft)]
        else:
            raise PlannerError(f"unknown buffer type '{buft}' in -ot {pat}={buft}; available: "
                               + ", ".join(["CPU"] + list(by_label)))
        try:
            out.append((compile_pattern(pat), di))        # bounded time (planner.core.llamacpp.regex_match)
        except ValueError as e:
            raise PlannerError(f"-ot pattern '{pat}' cannot be used: {e}") from None
    return out


def tensor_device(name: str, il: int, expert: bool, rules: list[tuple[re.Pattern[str], int]], n_cpu_moe: int,
                  ldev: list[int]) -> int:
    """The device index of a loaded tensor (-1: host): the first -ot rule that matches its name, else the
    host for token_embd and for the routed experts of the first n_cpu_moe layers, else its layer's device."""
    di = next((d for rx, d in rules if rx.search(name)), None)
    if di is not None:
        return di
    if il < 0 or (il < n_cpu_moe and expert):
        return -1
    return ldev[il]


def host_copies(hp: Hparams, opts: MemoryOptions, copy_by_layer: dict[int, int], ldev: list[int], first: int,
                first_layers: list[int], n_graph: int) -> HostCopies:
    """The host weights the first GPU copies in (op offload), sorted by what is alive beside each copy
    (HostCopies): a layer's largest host weight, by where the layer's attention runs."""
    last_here = max(first_layers, default=-1)
    kv = kv_bytes_by_layer(hp, opts)
    att = kv_b = mask = alone = 0
    for il, b in copy_by_layer.items():
        if ldev[il] == first or (ldev[il] == -1 and il < n_graph):
            att = max(att, b)
            if ldev[il] == -1 and il < len(kv):
                kv_b = max(kv_b, kv[il])
        elif last_here > il:
            mask = max(mask, b)
        else:
            alone = max(alone, b)
    return HostCopies(with_attention=att, kv=kv_b, with_mask=mask, alone=alone)


def plan_memory(hp: Hparams, tensors: list[TensorPlan], slots: list[Slot], opts: MemoryOptions,
                weights: LayerWeights | None = None) -> MemoryPlan:
    """Per-device memory of one scheme's tensors on `slots` (llama.cpp -sm layer, or -sm none).

    `weights` (LayerWeights.of(hp, tensors)) saves re-summing the tensors when the same scheme is
    placed many times (fewest devices, largest context). Tensor overrides (-ot) are applied per tensor,
    the first matching pattern winning (llama_model::load_tensors); the KV cache follows the layer."""
    lw = weights or LayerWeights.of(hp, tensors)
    n = len(slots)
    if opts.split_mode not in ("layer", "none"):
        raise PlannerError(f"-sm {opts.split_mode} is not modelled; valid: layer, none")
    if opts.split_mode == "none" and n:
        if not 0 <= opts.main_gpu < n:
            raise PlannerError(f"--main-gpu {opts.main_gpu} is out of range for {n} devices")
        splits = [1.0 if i == opts.main_gpu else 0.0 for i in range(n)]
    elif opts.tensor_split is not None:
        if len(opts.tensor_split) != n:
            raise PlannerError(f"--tensor-split has {len(opts.tensor_split)} values for {n} devices")
        splits = list(opts.tensor_split)
    else:
        splits = [s.weight if s.weight is not None else float(s.capacity_bytes - s.reserve_bytes) for s in slots]
    if n and not any(x > 0 for x in splits):
        raise PlannerError("--tensor-split must give at least one device a share")
    if opts.ngl is not None and opts.ngl > hp.n_layer + 1:
        ngl = hp.n_layer + 1
    else:
        ngl = opts.ngl
    ldev = layer_devices(hp.n_layer, n, splits, ngl, opts.ngl_output_first)
    # positional (device, weights, kv, compute, overhead, capacity, layers): a third of the keyword
    # form's time, for up to 384 devices per plan and several plans per scheme when searching
    devs = [DeviceMemory(s.label, 0, 0, 0, s.reserve_bytes, s.capacity_bytes, []) for s in slots]
    host = DeviceMemory(device="Host", capacity_bytes=opts.host_capacity_bytes)
    for il, di in enumerate(ldev):        # one pass: O(devices + layers) for thousands of devices
        (host if di < 0 else devs[di]).layers.append(il)

    gpu = opts.backend in GPU_BACKENDS
    host_copy: dict[int, int] = {}         # layer -> its largest 2-D weight in host memory (op offload's copy)
    rules = override_rules(opts, [s.label for s in slots]) if opts.tensor_overrides else []
    if rules:
        for tp in tensors:
            il, expert, loaded = tensor_site(tp.name, hp.n_layer, hp.n_layer_nextn)
            if not loaded:
                continue
            di = tensor_device(tp.name, il, expert, rules, opts.n_cpu_moe, ldev)
            (host if di < 0 else devs[di]).weights_bytes += tp.bytes
            if di < 0 and len(tp.shape) >= 2 and not tp.name.startswith("token_embd"):
                host_copy[il] = max(host_copy.get(il, 0), tp.bytes)
    else:
        host.weights_bytes += lw.host
        for il, b in enumerate(lw.per_layer):
            di = ldev[il]
            if il < opts.n_cpu_moe and il < hp.n_layer:
                host.weights_bytes += lw.experts[il]
                b -= lw.experts[il]
                if lw.largest_expert:
                    host_copy[il] = max(host_copy.get(il, 0), lw.largest_expert[il])
            if di < 0 and lw.largest:
                host_copy[il] = max(host_copy.get(il, 0), lw.largest[il])
            (host if di < 0 else devs[di]).weights_bytes += b

    for il, b in enumerate(kv_bytes_by_layer(hp, opts)):
        di = ldev[il]
        (host if di < 0 else devs[di]).kv_bytes += b

    out_dev = ldev[hp.n_layer]
    n_graph = kv_layers(hp)                        # the blocks in the graph (not the NextN/MTP ones)
    host_layers = sum(1 for il in host.layers if il < n_graph)
    n_used = sum(1 for d in devs if d.layers)
    used = n_used + (1 if host_layers or out_dev == -1 else 0)
    n_split = max(1, used + (1 if n_used else 0))  # the host's input split counts
    compute: dict[tuple[int, bool, bool], int] = {}      # devices with the same load share one figure
    gpu_compute: dict[tuple[int, bool, bool, HostCopies], int] = {}
    pp = pipeline_parallel(n_used, not host.layers, opts)
    first_dev = ldev[0]                            # receives the token embeddings
    if gpu:
        n_copies = SCHED_MAX_COPIES if pp else 1
        # ops on host weights run on the first GPU (RPC devices do not offload)
        first = next((i for i, s in enumerate(slots) if not s.label.startswith("RPC")), None)
        copies = (host_copies(hp, opts, host_copy, ldev, first, devs[first].layers, n_graph)
                  if first is not None and host_copy and offloads_ops(opts) else HostCopies())
        for d_i, d in enumerate(devs):
            key = (bisect.bisect_left(d.layers, n_graph), out_dev == d_i, d_i == first_dev)   # graph layers (d.layers is sorted), output, layer 0
            if slots[d_i].label.startswith("RPC"):
                if key not in compute:
                    compute[key] = compute_buffer_bytes(hp, opts, hp.n_vocab, key[0], key[1], False, n_split,
                                                        pipeline=pp, first=key[2])
                d.compute_bytes = compute[key]
                continue
            copy = copies if d_i == first else HostCopies()
            gkey = (key[0], key[1], key[2], copy)
            if gkey not in gpu_compute:
                # the host's input split is not a stage of its own here: its inputs sit in CUDA_Host
                gpu_compute[gkey] = gpu_compute_buffer_bytes(hp, opts, hp.n_vocab, key[0], key[1], max(1, used),
                                                             host_copies=copy, pipeline=pp, first=key[2])
            d.compute_bytes = gpu_compute[gkey]
        host.compute_bytes = host_compute_buffer_bytes(hp, opts, hp.n_vocab, host_layers, out_dev == -1,
                                                       max(1, used), n_copies=n_copies, op_offload=n_used > 0,
                                                       host_weights=any(ldev[il] >= 0 for il in host_copy))
    else:
        for d_i, d in enumerate(devs):
            key = (bisect.bisect_left(d.layers, n_graph), out_dev == d_i, d_i == first_dev)   # graph layers (d.layers is sorted), output, layer 0
            if key not in compute:
                compute[key] = compute_buffer_bytes(hp, opts, hp.n_vocab, key[0], key[1], False, n_split,
                                                    pipeline=pp, first=key[2])
            d.compute_bytes = compute[key]
        host.compute_bytes = compute_buffer_bytes(hp, opts, hp.n_vocab, host_layers, out_dev == -1, True, n_split,
                                                  pipeline=pp)
        if n_used and not host_layers and any(ldev[il] >= 0 for il in host_copy):
            # devices' layers with weights in host memory: the CPU computes those products (RPC devices
            # never offload them)
            n_ctx, _ = padded_ctx(opts.ctx, opts.streams)
            host.compute_bytes += _host_experts_bytes(hp, min(n_ctx, opts.ubatch))
    # output buffer: logits (n_vocab floats) for n_seq_max outputs, kept in host memory
    host.overhead_bytes = hp.n_vocab * max(1, opts.parallel) * F32

    n_ctx, _ = padded_ctx(opts.ctx, opts.streams)
    notes = []
    if n_ctx != opts.ctx:
        notes.append(f"llama.cpp pads the context to {n_ctx} cells")
    if opts.n_cpu_moe:
        notes.append(f"expert tensors of blocks 0..{opts.n_cpu_moe - 1} stay in host RAM (--n-cpu-moe {opts.n_cpu_moe})")
    if rules:
        notes.append(f"{len(rules)} tensor override(s) (-ot) applied, the first matching pattern winning")
    return MemoryPlan(
        kv_cache_bytes=sum(d.kv_bytes for d in devs) + host.kv_bytes,
        compute_bytes=sum(d.compute_bytes for d in devs) + host.compute_bytes,
        host_bytes=host.total_bytes,
        per_device=devs,
        host=host,
        n_ctx=n_ctx,
        notes=notes,
    )
