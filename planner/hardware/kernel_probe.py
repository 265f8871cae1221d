"""The CPU backend's own matrix kernels, timed per ggml type: the achieved decode and prefill rates of
the host as a device.

On a host with few cores the decode step of a K-quant or i-quant model is not bound by memory alone:
the dot-product kernels (ggml-cpu's vec_dot_* and the repacked gemv/gemm of ggml-cpu/repack.cpp) unpack
scales and grids at a rate per core that can be below the memory's. Per tensor the time is the larger
of its bytes over the memory's bandwidth and its work over the kernel's rate (a roofline); rather than
model the second term from instruction counts, this module MEASURES the result per type with the ggml
library llama.cpp itself loads (libggml-base / libggml-cpu next to the llama.cpp binaries), through
ctypes, placing the weight as llama.cpp's model loader does:

  - a 4096 x 256 block of the type is quantized by ggml_quantize_chunk from random floats (an imatrix
    of ones where the type needs one) and repeated to fill the weights (valid blocks, any size);
  - the weight goes into the CPU backend's extra (repack) buffer type when the CPU device accepts the
    matrix product there (ggml_backend_dev_supports_op, as llama.cpp's weight_buft_supported asks:
    q4_0, q4_K, iq4_nl, q2_K on AVX2/AVX-512 x86), else into the plain CPU buffer;
  - decode: matrix-vector products (src1: one f32 column, converted to the type's vec_dot_type inside
    the op, as for a token) over STREAM_PARTS weights of STREAM_BYTES in all, twelve times a 32 MiB
    last-level cache, so that their bytes stream from memory as a model's layers do: the median run
    gives the bytes per second the type's decode kernel achieves from memory on this host, the
    roofline's max(memory, compute) as the hardware resolves it. (One 96 MiB weight, three times the
    cache, read 20-25% faster than the 57 matrices of a 265 MB model interleaved with it: AMD's victim
    L3 keeps part of a cyclic stream three times its size; 384 MiB in 16 weights came within 10-16%.);
  - prefill: products of a 4096 x 1024 and a 4096 x 4096 weight with a 512-column src1 (a ubatch),
    alternated: weight FLOPs (2 x elements x columns) per second of the type's gemm (tinyBLAS / repacked
    / vec_dot paths) from their difference, and the rest of the smaller one's time per src1 element (its
    conversion to the type's dot-product type, once per product: ~10% of a 4096 x 1024 product);
  - attention while decoding (probe_graph): ggml_flash_attn_ext of one query token over 256 and 4352
    cached f16 rows, per attention class (MLA's shared latent row, GQA's heads) at two row widths: the
    difference is the cost of 4096 cached tokens per query head, a fixed part (the online softmax) and
    a part per K + V dim, so that a model's own head dims are costed, not the probe's;
  - routed experts (probe_experts, probe_expert_decode): ggml_mul_mat_id over 2048 x 512 experts, a
    ubatch of 512 tokens (4 of 64 experts each) and one decoded token (8 distinct experts per product,
    as many products as fill STREAM_BYTES, so that the experts stream from memory);
  - the thread count is llama.cpp's (ggml_backend_cpu_set_n_threads); each figure is the median of the
    runs over 0.25 s after a warm-up (an idle virtual CPU takes milliseconds to wake up), and the pairs
    whose difference gives a cost are timed in alternating windows (_time_interleaved).

The result (the JSON of __main__, read by planner.core.devices.host_kernels.HostKernels.from_json) is cached by
planner/hardware/host.py. Nothing here is fitted to a model: the figures are the kernels' own speed.
"""

from __future__ import annotations

import ctypes
import os
import time
from contextlib import contextmanager
from pathlib import Path

# the types llama-quantize writes for weights (ggml type numbers: ggml.h enum ggml_type)
PROBE_TYPES = {
    "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14,
    "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq4_nl": 20, "iq3_s": 21, "iq2_s": 22,
    "iq4_xs": 23, "iq1_m": 29, "bf16": 30, "tq1_0": 34, "tq2_0": 35,
}
# the probe's method: a cache of figures measured another way (planner/hardware/host.py) is measured
# again. 2: decode over STREAM_PARTS weights of STREAM_BYTES; prefill with its cost per src1 element.
PROBE_METHOD = 2
ROW = 4096                  # elements per row (a multiple of every block size)
SHORT_ROW = 1024            # the same bytes read as rows of this many elements: the cost per row
BLOCK_ROWS = 256            # rows quantized (the block repeated to fill the weights)
STREAM_BYTES = 384 << 20    # the decode weights: twelve times a 32 MiB last-level cache
STREAM_PARTS = 16           # as this many matrices (24 MiB each), a graph of products as a model's layers
PREFILL_ROWS = 1024         # rows of the prefill weight (4.2 M elements)
PREFILL_ROWS_LONG = 4096    # and of a second one: the two give the rate and a cost per src1 element
UBATCH = 512        # columns of the prefill product
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_I32 = 26


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _find_libs(folders: list[Path]) -> tuple[Path, Path]:
    for f in folders:
        for d in (f, f.parent / "lib", f.parent / "lib64"):
            base, cpu = d / "libggml-base.so", d / "libggml-cpu.so"
            if base.exists() and cpu.exists():
                return base, cpu
            for b in sorted(d.glob("libggml-base.so*")):
                c = sorted(d.glob("libggml-cpu.so*"))
                if c:
                    return b, c[0]
    raise OSError("libggml-base / libggml-cpu not found next to the llama.cpp binaries")


class _Ggml:
    def __init__(self, folders: list[Path]):
        base_p, cpu_p = _find_libs(folders)
        self.base = ctypes.CDLL(str(base_p), mode=ctypes.RTLD_GLOBAL)
        self.cpu = ctypes.CDLL(str(cpu_p), mode=ctypes.RTLD_GLOBAL)
        vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
        sig = {
            (self.base, "ggml_init"): ([_InitParams], vp),
            (self.base, "ggml_free"): ([vp], None),
            (self.base, "ggml_tensor_overhead"): ([], sz),
            (self.base, "ggml_graph_overhead_custom"): ([sz, ctypes.c_bool], sz),
            (self.base, "ggml_new_tensor_2d"): ([vp, ctypes.c_int, i64, i64], vp),
            (self.base, "ggml_new_tensor_3d"): ([vp, ctypes.c_int, i64, i64, i64], vp),
            (self.base, "ggml_flash_attn_ext"): ([vp, vp, vp, vp, vp, ctypes.c_float, ctypes.c_float,
                                                  ctypes.c_float], vp),
            (self.base, "ggml_mul_mat"): ([vp, vp, vp], vp),
            (self.base, "ggml_mul_mat_id"): ([vp, vp, vp, vp], vp),
            (self.base, "ggml_new_graph_custom"): ([vp, sz, ctypes.c_bool], vp),
            (self.base, "ggml_build_forward_expand"): ([vp, vp], None),
            (self.base, "ggml_nbytes"): ([vp], sz),
            (self.base, "ggml_row_size"): ([ctypes.c_int, i64], sz),
            (self.base, "ggml_quantize_chunk"): ([ctypes.c_int, vp, vp, i64, i64, i64, vp], sz),
            (self.base, "ggml_quantize_requires_imatrix"): ([ctypes.c_int], ctypes.c_bool),
            (self.base, "ggml_backend_alloc_ctx_tensors_from_buft"): ([vp, vp], vp),
            (self.base, "ggml_backend_buffer_free"): ([vp], None),
            (self.base, "ggml_backend_tensor_set"): ([vp, vp, sz, sz], None),
            (self.base, "ggml_backend_graph_compute"): ([vp, vp], ctypes.c_int),
            (self.base, "ggml_backend_dev_supports_op"): ([vp, vp], ctypes.c_bool),
            (self.base, "ggml_backend_reg_dev_get"): ([vp, sz], vp),
            (self.base, "ggml_backend_reg_get_proc_address"): ([vp, ctypes.c_char_p], vp),
            (self.base, "ggml_backend_free"): ([vp], None),
            (self.cpu, "ggml_backend_cpu_reg"): ([], vp),
            (self.cpu, "ggml_backend_cpu_init"): ([], vp),
            (self.cpu, "ggml_backend_cpu_set_n_threads"): ([vp, ctypes.c_int], None),
            (self.cpu, "ggml_backend_cpu_buffer_type"): ([], vp),
        }
        for (lib, name), (args, res) in sig.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
            setattr(self, name, fn)


def _extra_bufts(g: _Ggml, reg, dev) -> list[int]:
    addr = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not addr:
        return []
    fn = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(addr)
    arr = fn(dev)
    out, i = [], 0
    while arr and arr[i]:
        out.append(arr[i])
        i += 1
    return out


def _others_busy(t0: tuple[float, float, float], t1: tuple[float, float, float]) -> float:
    """CPUs' worth of time other processes used between two _clock() readings."""
    wall = t1[0] - t0[0]
    if wall <= 0:
        return 0.0
    return max(0.0, ((t1[1] - t0[1]) - (t1[2] - t0[2])) / wall)


def _clock() -> tuple[float, float, float]:
    """(wall s, CPU-seconds every process used (/proc/stat), CPU-seconds this process used)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = 0.0
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def _window(g: _Ggml, backend, graph, reps: int, warm_s: float, min_s: float) -> tuple[float, float]:
    """(the median seconds of at least `reps` runs spread over at least min_s seconds, the CPUs' worth of
    time other processes used meanwhile), after warm_s seconds of runs: an idle core (or a virtual CPU
    the hypervisor parked) takes milliseconds to wake, so the first runs after a pause measure the
    wake-up, not the kernel."""
    import statistics

    t_end = time.perf_counter() + warm_s
    while time.perf_counter() < t_end:
        g.ggml_backend_graph_compute(backend, graph)
    c0 = _clock()
    runs: list[float] = []
    t_end = time.perf_counter() + min_s
    while len(runs) < reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        g.ggml_backend_graph_compute(backend, graph)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), _others_busy(c0, _clock())


def _time(g: _Ggml, backend, graph, reps: int, warm_s: float = 0.05, min_s: float = 0.25,
          tries: int = 4, quiet: float = 0.15) -> float:
    """The median of at least `reps` runs over at least min_s seconds (_window). The median, not the
    fastest run: on a virtual machine the fastest of many runs is a moment of an idle neighbour, while
    llama-bench reports the mean of its repetitions; both are then the kernel's typical speed. On a
    machine shared with other work a window in which other processes used more than `quiet` of a CPU is
    measured again (up to `tries` windows, the least disturbed kept): with every core in the product,
    one core taken by someone else stalls them all."""
    best: tuple[float, float] | None = None          # (others' CPU use, median seconds)
    for _ in range(tries):
        seconds, others = _window(g, backend, graph, reps, warm_s, min_s)
        if best is None or others < best[0]:
            best = (others, seconds)
        if others <= quiet:
            break
    return best[1]


# the paired timings (a decode weight read as long and as short rows; one attention at two cache
# lengths) alternate in INTERLEAVE_ROUNDS windows of INTERLEAVE_WINDOW_S each: on a machine whose memory
# speed moves by tens of percent from one second to the next (a shared virtual machine: its neighbours'
# traffic), two timings taken one after the other differ by the moment as much as by the work, and the
# per-row or per-token cost computed from their difference was mostly that noise. Alternated, both sample
# the same moments, and the rounds together span about as long as a llama-bench run's repetitions.
INTERLEAVE_ROUNDS = 6
INTERLEAVE_WINDOW_S = 0.15


def _time_interleaved(g: _Ggml, backend, graphs: list, reps: int = 3, rounds: int = INTERLEAVE_ROUNDS,
                      window_s: float = INTERLEAVE_WINDOW_S, warm_s: float = 0.05,
                      quiet: float = 0.15) -> list[float]:
    """Per graph the median seconds of its windows (_window), timed alternately (A B A B ...) in `rounds`
    rounds. Windows in which other processes used more than `quiet` of a CPU are left out while at least
    half of a graph's windows remain."""
    import statistics

    clean: list[list[float]] = [[] for _ in graphs]
    every: list[list[float]] = [[] for _ in graphs]
    for _ in range(rounds):
        for i, graph in enumerate(graphs):
            seconds, others = _window(g, backend, graph, reps, warm_s, window_s)
            every[i].append(seconds)
            if others <= quiet:
                clean[i].append(seconds)
    return [statistics.median(c if 2 * len(c) >= len(e) else e) for c, e in zip(clean, every)]


def _quantized_rows(g: _Ggml, tnum: int, row: int, rng):
    """BLOCK_ROWS rows of `row` random floats quantized to the type by ggml_quantize_chunk (an imatrix of
    ones where the type needs one): (their bytes, one row's bytes); repeated, they fill a probe weight."""
    import numpy as np

    src = rng.standard_normal(row * BLOCK_ROWS, dtype=np.float32)
    row_b = g.ggml_row_size(tnum, row)
    block = np.empty(row_b * BLOCK_ROWS, dtype=np.uint8)
    imat = np.ones(row, dtype=np.float32)
    g.ggml_quantize_chunk(tnum, src.ctypes.data, block.ctypes.data, 0, BLOCK_ROWS, row,
                          imat.ctypes.data if g.ggml_quantize_requires_imatrix(tnum) else None)
    return block, row_b


def _release(g: _Ggml, buffers: list, contexts: list) -> None:
    """Free backend buffers (None skipped) and then ggml contexts."""
    for b in buffers:
        if b:
            g.ggml_backend_buffer_free(b)
    for c in contexts:
        g.ggml_free(c)


@contextmanager
def _cpu_backend(folders: list[Path], threads: int):
    """(ggml, the CPU device, its extra buffer types, a CPU backend with `threads` threads), freed after."""
    g = _Ggml(folders)
    reg = g.ggml_backend_cpu_reg()
    dev = g.ggml_backend_reg_dev_get(reg, 0)
    bufts = _extra_bufts(g, reg, dev)
    backend = g.ggml_backend_cpu_init()
    g.ggml_backend_cpu_set_n_threads(backend, threads)
    try:
        yield g, dev, bufts, backend
    finally:
        g.ggml_backend_free(backend)


def _probe_type(g: _Ggml, backend, dev, bufts: list[int], tnum: int,
                reps: int) -> tuple[float, float, bool, float, float]:
    """(streaming decode bytes/s, prefill FLOP/s, repacked, decode seconds per weight row, prefill seconds
    per src1 element) of one type.

    A mat-vec costs bytes / rate + rows x (a cost per row: the dot product's setup and its horizontal
    sum, more for the K-quants' scales). The same bytes are timed as rows of ROW and of SHORT_ROW
    elements (the same blocks, read as four times as many rows): the difference is the per-row cost,
    the rest the streaming rate. DeepSeek-R1's 7168-wide rows amortise it; 1024-wide rows do not."""
    import numpy as np

    rng = np.random.default_rng(0)
    block, row_b = _quantized_rows(g, tnum, ROW, rng)
    # the decode weights: STREAM_BYTES of the quantized block repeated (valid data, beyond the caches), in
    # STREAM_PARTS matrices of dec_rows rows each
    dec_rows = max(BLOCK_ROWS, STREAM_BYTES // STREAM_PARTS // row_b // BLOCK_ROWS * BLOCK_ROWS)
    data = np.tile(block, dec_rows // BLOCK_ROWS)
    pdata = np.tile(block, PREFILL_ROWS_LONG // BLOCK_ROWS)      # the prefill weights' rows (both fit)
    n = 2 * STREAM_PARTS + 8
    mem = g.ggml_tensor_overhead() * (2 * n) + g.ggml_graph_overhead_custom(n, False) * 4 + 4096
    cpu_buft = g.ggml_backend_cpu_buffer_type()
    for buft in bufts + [cpu_buft]:
        ctx_w = g.ggml_init(_InitParams(g.ggml_tensor_overhead() * n, None, True))
        wds = [g.ggml_new_tensor_2d(ctx_w, tnum, ROW, dec_rows) for _ in range(STREAM_PARTS)]
        wp = g.ggml_new_tensor_2d(ctx_w, tnum, ROW, PREFILL_ROWS)
        wpl = g.ggml_new_tensor_2d(ctx_w, tnum, ROW, PREFILL_ROWS_LONG)
        wss = [g.ggml_new_tensor_2d(ctx_w, tnum, SHORT_ROW, dec_rows * (ROW // SHORT_ROW)) for _ in range(STREAM_PARTS)]
        buf_w = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft)
        ctx = g.ggml_init(_InitParams(mem, None, True))
        x1 = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ROW, 1)
        xs = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, SHORT_ROW, 1)
        xb = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ROW, UBATCH)
        decs = [g.ggml_mul_mat(ctx, w, x1) for w in wds]
        decs_s = [g.ggml_mul_mat(ctx, w, xs) for w in wss]
        pre = g.ggml_mul_mat(ctx, wp, xb)
        pre_l = g.ggml_mul_mat(ctx, wpl, xb)
        if not buf_w or (buft != cpu_buft and not (g.ggml_backend_dev_supports_op(dev, decs[0])
                                                    and g.ggml_backend_dev_supports_op(dev, decs_s[0])
                                                    and g.ggml_backend_dev_supports_op(dev, pre))):
            _release(g, [buf_w], [ctx, ctx_w])
            continue
        for w in wds + wss:
            g.ggml_backend_tensor_set(w, data.ctypes.data, 0, data.nbytes)
        g.ggml_backend_tensor_set(wp, pdata.ctypes.data, 0, row_b * PREFILL_ROWS)
        g.ggml_backend_tensor_set(wpl, pdata.ctypes.data, 0, row_b * PREFILL_ROWS_LONG)
        gd = g.ggml_new_graph_custom(ctx, n, False)
        for d in decs:
            g.ggml_build_forward_expand(gd, d)
        gs = g.ggml_new_graph_custom(ctx, n, False)
        for d in decs_s:
            g.ggml_build_forward_expand(gs, d)
        gp = g.ggml_new_graph_custom(ctx, n, False)
        g.ggml_build_forward_expand(gp, pre)
        gpl = g.ggml_new_graph_custom(ctx, n, False)
        g.ggml_build_forward_expand(gpl, pre_l)
        buf_c = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, cpu_buft)
        xv = (rng.standard_normal(ROW * UBATCH, dtype=np.float32) * 0.1)
        g.ggml_backend_tensor_set(x1, xv.ctypes.data, 0, ROW * 4)
        g.ggml_backend_tensor_set(xs, xv.ctypes.data, 0, SHORT_ROW * 4)
        g.ggml_backend_tensor_set(xb, xv.ctypes.data, 0, ROW * UBATCH * 4)
        td, ts = _time_interleaved(g, backend, [gd, gs], reps)
        tp, tpl = _time_interleaved(g, backend, [gp, gpl], 2, rounds=4, window_s=0.15, warm_s=0.02)
        _release(g, [buf_c, buf_w], [ctx, ctx_w])
        rows, rows_s = dec_rows * STREAM_PARTS, dec_rows * (ROW // SHORT_ROW) * STREAM_PARTS
        # the cost per row from the difference (never below 0; at most half the long rows' time, so that
        # noise between the two timings cannot leave a streaming rate above what the long rows showed
        # twice over)
        per_row = min(max(0.0, (ts - td) / (rows_s - rows)), td / (2 * rows))
        # a ubatch product costs its FLOPs at the gemm's rate plus the conversion of its src1 (ROW x UBATCH
        # floats to the type's dot-product type, once per product): the two row counts give both (the
        # rate from their difference; the rest of the shorter one's time, per src1 element, never below 0)
        flops_s, flops_l = (2.0 * ROW * r * UBATCH for r in (PREFILL_ROWS, PREFILL_ROWS_LONG))
        rate = (flops_l - flops_s) / (tpl - tp) if tpl > tp else flops_l / tpl
        src_s = max(0.0, (tp - flops_s / rate) / (ROW * UBATCH))
        return data.nbytes * STREAM_PARTS / (td - rows * per_row), rate, buft != cpu_buft, per_row, src_s
    raise OSError("no CPU buffer accepted the probe weight")


# attention over the KV cache while decoding one token, as llama.cpp's graph runs it with flash attention
# (ggml_flash_attn_ext; llama-bench's and llama-server's default on the CPU): per class two shapes
# (K row dims, V row dims, query heads, KV heads) of the same head layout and different row dims. Per
# query head and cached token the kernel's time is a fixed part (the online softmax's scale, max and exp,
# the mask) plus a part per K and V dim (the dot product and the V accumulation): the two shapes give both.
ATTENTION_SHAPES = {
    # DeepSeek MLA, absorbed: one latent K row (kv_lora 512 + rope 64), V its first 512 dims, shared by
    # every head; and a narrower latent (128 + 64)
    "mla": ((576, 512, 32, 1), (192, 128, 32, 1)),
    # grouped-query attention, 4 query heads per KV head: 128- and 256-dim heads
    "gqa": ((128, 128, 32, 8), (256, 256, 32, 8)),
}
ATTN_CELLS = (256, 4352)           # the two cache lengths timed: their difference is 4096 cached tokens


def _probe_attention(g: _Ggml, backend, dk: int, dv: int, n_head: int, n_head_kv: int) -> float:
    """Seconds per query head and cached token of one decoded token's ggml_flash_attn_ext: the time at
    ATTN_CELLS[1] minus at ATTN_CELLS[0], over the cells between and the heads."""
    import numpy as np

    rng = np.random.default_rng(1)
    cpu_buft = g.ggml_backend_cpu_buffer_type()
    graphs, buffers, contexts = [], [], []
    for n_kv in ATTN_CELLS:
        mem = g.ggml_tensor_overhead() * 8 + g.ggml_graph_overhead_custom(8, False) + 4096
        ctx = g.ggml_init(_InitParams(mem, None, True))
        q = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, dk, 1, n_head)
        k = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F16, dk, n_kv, n_head_kv)
        v = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F16, dv, n_kv, n_head_kv)
        mask = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, 1)
        out = g.ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0 / dk ** 0.5, 0.0, 0.0)
        graph = g.ggml_new_graph_custom(ctx, 8, False)
        g.ggml_build_forward_expand(graph, out)
        buf = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, cpu_buft)
        for t, n, dt in ((q, dk * n_head, np.float32), (k, dk * n_kv * n_head_kv, np.float16),
                         (v, dv * n_kv * n_head_kv, np.float16), (mask, n_kv, np.float16)):
            a = (rng.standard_normal(n) * 0.1).astype(dt) if t != mask else np.zeros(n, dt)
            g.ggml_backend_tensor_set(t, a.ctypes.data, 0, a.nbytes)
        graphs.append(graph)
        buffers.append(buf)
        contexts.append(ctx)
    # the two cache lengths timed alternately: their difference is the cost of the cells between
    times = _time_interleaved(g, backend, graphs, 9)
    _release(g, buffers, contexts)
    return max(1e-15, (times[1] - times[0]) / (ATTN_CELLS[1] - ATTN_CELLS[0]) / n_head)


def attention_cost(wide: tuple[int, int, float], narrow: tuple[int, int, float]) -> tuple[float, float]:
    """(seconds per head and cached token, seconds per K+V dim of it) from two shapes' (dk, dv, seconds
    per head and cached token): the line through them, neither part below 0."""
    (dk1, dv1, s1), (dk2, dv2, s2) = wide, narrow
    per_dim = max(0.0, (s1 - s2) / ((dk1 + dv1) - (dk2 + dv2)))
    fixed = max(0.0, s2 - per_dim * (dk2 + dv2))
    if fixed == 0.0:
        per_dim = s1 / (dk1 + dv1)
    return fixed, per_dim


# a ubatch through a routed-expert layer (ggml_mul_mat_id): 64 experts of 2048 x 512, 4 used per token,
# UBATCH tokens: each expert multiplies the ~32 tokens routed to it (DeepSeek-V3/R1 at ubatch 512: 16)
EXPERT_SHAPE = (2048, 512, 64, 4)


def _probe_experts(g: _Ggml, backend, dev, bufts: list[int], tnum: int) -> float:
    """Weight FLOP/s (2 x weight elements used x tokens) of a ubatch's routed-expert product in the type,
    in the buffer llama.cpp would put the expert tensor (CPU_REPACK where the device accepts
    MUL_MAT_ID there). ggml-cpu's MUL_MAT_ID gathers each expert's tokens and multiplies them apart:
    small products, without the float paths' tiled sgemm, so several times slower per FLOP than the
    one dense product of the prefill probe for some types (bf16, q8_0, q6_K here)."""
    import numpy as np

    ne0, ne1, n_exp, n_used = EXPERT_SHAPE
    rng = np.random.default_rng(2)
    block, _ = _quantized_rows(g, tnum, ne0, rng)
    data = np.tile(block, ne1 * n_exp // BLOCK_ROWS)
    mem = g.ggml_tensor_overhead() * 16 + g.ggml_graph_overhead_custom(16, False) + 4096
    cpu_buft = g.ggml_backend_cpu_buffer_type()
    ids = np.stack([rng.permutation(n_exp)[:n_used] for _ in range(UBATCH)]).astype(np.int32)
    xv = (rng.standard_normal(ne0 * n_used * UBATCH) * 0.1).astype(np.float32)
    for buft in bufts + [cpu_buft]:
        ctx_w = g.ggml_init(_InitParams(g.ggml_tensor_overhead() * 4, None, True))
        w = g.ggml_new_tensor_3d(ctx_w, tnum, ne0, ne1, n_exp)
        buf_w = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft)
        ctx = g.ggml_init(_InitParams(mem, None, True))
        x = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, n_used, UBATCH)
        t_ids = g.ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_used, UBATCH)
        out = g.ggml_mul_mat_id(ctx, w, x, t_ids)
        if not buf_w or (buft != cpu_buft and not g.ggml_backend_dev_supports_op(dev, out)):
            _release(g, [buf_w], [ctx, ctx_w])
            continue
        g.ggml_backend_tensor_set(w, data.ctypes.data, 0, data.nbytes)
        graph = g.ggml_new_graph_custom(ctx, 16, False)
        g.ggml_build_forward_expand(graph, out)
        buf_c = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, cpu_buft)
        g.ggml_backend_tensor_set(t_ids, ids.ctypes.data, 0, ids.nbytes)
        g.ggml_backend_tensor_set(x, xv.ctypes.data, 0, xv.nbytes)
        t = _time(g, backend, graph, 5, warm_s=0.02)
        _release(g, [buf_c, buf_w], [ctx, ctx_w])
        return 2.0 * ne0 * ne1 * n_used * UBATCH / t
    raise OSError("no CPU buffer accepted the expert probe weight")


# one token through routed experts (ggml_mul_mat_id): experts of 2048 x 512 as EXPERT_SHAPE, 8 used per
# token as DeepSeek-V3/R1; the graph runs one product per group of 8 distinct experts, over as many
# experts as fill STREAM_BYTES, so that every run reads them from memory
EXPERT_DECODE_USED = 8


def _probe_expert_decode(g: _Ggml, backend, dev, bufts: list[int], tnum: int, row_seconds: float) -> float:
    """Bytes/s a decoded token's routed-expert product (MUL_MAT_ID) in the type reads its active experts
    at, in the buffer llama.cpp would put the expert tensor, beyond the type's cost per row (measured by
    _probe_type; the experts' rows pay it as well). The one weight holds STREAM_BYTES of experts, and the
    graph is one product per group of EXPERT_DECODE_USED distinct experts: a run reads each expert once,
    from memory, as a token's experts are (the experts of consecutive tokens rarely repeat)."""
    import numpy as np

    ne0, ne1 = EXPERT_SHAPE[0], EXPERT_SHAPE[1]
    rng = np.random.default_rng(3)
    block, row_b = _quantized_rows(g, tnum, ne0, rng)
    groups = max(4, STREAM_BYTES // (row_b * ne1 * EXPERT_DECODE_USED))
    n_exp = groups * EXPERT_DECODE_USED
    data = np.tile(block, ne1 * n_exp // BLOCK_ROWS)
    mem = g.ggml_tensor_overhead() * (2 * groups + 8) + g.ggml_graph_overhead_custom(2 * groups + 8, False) + 4096
    cpu_buft = g.ggml_backend_cpu_buffer_type()
    ids = rng.permutation(n_exp).astype(np.int32).reshape(groups, EXPERT_DECODE_USED)
    xv = (rng.standard_normal(ne0) * 0.1).astype(np.float32)
    for buft in bufts + [cpu_buft]:
        ctx_w = g.ggml_init(_InitParams(g.ggml_tensor_overhead() * 4, None, True))
        w = g.ggml_new_tensor_3d(ctx_w, tnum, ne0, ne1, n_exp)
        buf_w = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, buft)
        ctx = g.ggml_init(_InitParams(mem, None, True))
        x = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, 1, 1)        # one token, shared by its experts
        t_ids = [g.ggml_new_tensor_2d(ctx, GGML_TYPE_I32, EXPERT_DECODE_USED, 1) for _ in range(groups)]
        outs = [g.ggml_mul_mat_id(ctx, w, x, t) for t in t_ids]
        if not buf_w or (buft != cpu_buft and not g.ggml_backend_dev_supports_op(dev, outs[0])):
            _release(g, [buf_w], [ctx, ctx_w])
            continue
        g.ggml_backend_tensor_set(w, data.ctypes.data, 0, data.nbytes)
        graph = g.ggml_new_graph_custom(ctx, 2 * groups + 8, False)
        for o in outs:
            g.ggml_build_forward_expand(graph, o)
        buf_c = g.ggml_backend_alloc_ctx_tensors_from_buft(ctx, cpu_buft)
        for t, row in zip(t_ids, ids):
            r = np.ascontiguousarray(row)
            g.ggml_backend_tensor_set(t, r.ctypes.data, 0, r.nbytes)
        g.ggml_backend_tensor_set(x, xv.ctypes.data, 0, xv.nbytes)
        t = _time(g, backend, graph, 5)
        _release(g, [buf_c, buf_w], [ctx, ctx_w])
        rows = n_exp * ne1
        return data.nbytes / max(t - rows * row_seconds, t / 2)
    raise OSError("no CPU buffer accepted the expert probe weight")


def probe_experts(folders: list[Path], threads: int, types: dict[str, int] | None = None) -> dict[str, float]:
    """{type: routed-expert prefill FLOP/s} of this host's ggml CPU kernels (see _probe_experts)."""
    with _cpu_backend(folders, threads) as (g, dev, bufts, backend):
        return {name: _probe_experts(g, backend, dev, bufts, tnum) for name, tnum in (types or PROBE_TYPES).items()}


def probe_expert_decode(folders: list[Path], threads: int, row_seconds: dict[str, float],
                        types: dict[str, int] | None = None) -> dict[str, float]:
    """{type: routed-expert decode bytes/s} of this host's ggml CPU kernels, beyond each type's cost per
    row (row_seconds: probe_kernels' figure; see _probe_expert_decode)."""
    with _cpu_backend(folders, threads) as (g, dev, bufts, backend):
        return {name: _probe_expert_decode(g, backend, dev, bufts, tnum, row_seconds.get(name, 0.0))
                for name, tnum in (types or PROBE_TYPES).items()}


def probe_graph(folders: list[Path], threads: int) -> dict:
    """{"attention": {class: {"head_token_seconds", "dim_seconds"}}}: decode attention's cost per query
    head and cached token on this host's ggml CPU backend with `threads` threads, a fixed part and a
    part per K+V dim (see ATTENTION_SHAPES)."""
    with _cpu_backend(folders, threads) as (g, _, _, backend):
        out = {}
        for c, shapes in ATTENTION_SHAPES.items():
            wide, narrow = ((dk, dv, _probe_attention(g, backend, dk, dv, h, hk)) for dk, dv, h, hk in shapes)
            fixed, per_dim = attention_cost(wide, narrow)
            out[c] = {"head_token_seconds": fixed, "dim_seconds": per_dim}
        return {"attention": out}


def probe_kernels(folders: list[Path], threads: int, reps: int = 7,
                  types: dict[str, int] | None = None) -> dict[str, tuple[float, float, bool, float, float]]:
    """{type: (decode bytes/s streamed from memory, prefill weight FLOP/s, repacked, decode seconds per
    row, prefill seconds per src1 element)} of this host's ggml CPU kernels with `threads` threads (see
    the module's docstring)."""
    with _cpu_backend(folders, threads) as (g, dev, bufts, backend):
        return {name: _probe_type(g, backend, dev, bufts, tnum, reps) for name, tnum in (types or PROBE_TYPES).items()}


def main(argv: list[str]) -> dict:
    """python -m planner.hardware.kernel_probe THREADS [--types T,T,...] [LIB_DIR...]: the probe's JSON
    (every type of PROBE_TYPES, or those named; f32 weights are costed as f16, so f32 brings f16)."""
    thr = int(argv[0])
    rest = list(argv[1:])
    types = PROBE_TYPES
    if rest[:1] == ["--types"] and len(rest) > 1:
        names = {"f16" if t == "f32" else t for t in rest[1].split(",") if t}
        unknown = sorted(names - set(PROBE_TYPES))
        if unknown:
            raise SystemExit(f"kernel probe: unknown types {', '.join(unknown)}")
        types = {k: v for k, v in PROBE_TYPES.items() if k in names}
        rest = rest[2:]
    dirs = [Path(d) for d in rest]
    if not dirs:
        raise SystemExit("kernel probe: name the folders of llama.cpp's libraries (LIB_DIR...)")
    t0 = time.perf_counter()
    res = probe_kernels(dirs, thr, types=types)
    graph = probe_graph(dirs, thr)
    experts = probe_experts(dirs, thr, types)
    expert_decode = probe_expert_decode(dirs, thr, {k: v[3] for k, v in res.items()}, types)
    return {"threads": thr, "method": PROBE_METHOD, "seconds": round(time.perf_counter() - t0, 2),
            "kernels": {k: {"decode_bytes_per_s": d, "prefill_flops": p, "repacked": r, "row_seconds": c,
                            "prefill_src_seconds": src} for k, (d, p, r, c, src) in res.items()},
            **graph, "experts": experts, "expert_decode": expert_decode}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(sys.argv[1:])))
