"""GPU-only and hybrid deployments per scheme, ranked; a host's measured ggml kernels in the speed model
(the roofline per tensor); the decode-vs-depth curve of the TUI's speed plot."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.core.llamacpp.fit import fewest_cpu_moe
from planner.core.llamacpp.plan_schemes import memory_options, resolve_model
from planner.core.devices.hardware import resolve_hardware
from planner.core.llamacpp.memory import LayerWeights, plan_memory
from planner.core.plan import PlanRequest
from planner.core.devices.host_kernels import AttentionCost, HostKernels, TypeKernels
from planner.core.llamacpp.speed import HOST, Processor, decode_curve, factors, llamacpp_speed
from planner.make_plan import make_plan, model_input

SCHEMES = ["Q4_K_M", "DQ3_K_M", "UD-Q2_K_XL"]
REQ = PlanRequest(device="a100", gpus=1, host_ram=512, schemes=SCHEMES)


def test_one_a100_gpu_only_does_not_fit_the_hybrid_does():
    plan = make_plan(REQ)
    model, kv = resolve_model(REQ, model_input(REQ))
    hp = model.hparams
    hw = resolve_hardware(REQ)
    opts = memory_options(REQ, kv, hw.host_capacity_bytes, hw.profile.backend)
    for sp in plan.schemes:
        gpu, hyb = sp.deployments
        assert (gpu.placement, gpu.n_cpu_moe, gpu.fits) == ("gpu", 0, False)
        # the hybrid keeps the fewest expert layers in host RAM that fit, checked exhaustively
        lw = LayerWeights.of(hp, sp.tensors)
        n = next(k for k in range(hp.n_layer + 1)
                 if plan_memory(hp, sp.tensors, hw.slots, replace(opts, n_cpu_moe=k), lw).fits)
        assert (hyb.placement, hyb.n_cpu_moe, hyb.fits) == ("hybrid", n, True)
        assert n == fewest_cpu_moe(hp, sp.tensors, hw.slots, opts, lw)
        # the experts' bytes of those layers are read at the host's bandwidth: slower, host-bound
        assert hyb.speed.decode_tps < gpu.speed.decode_tps and hyb.speed.bound == HOST
        assert hyb.host_bytes > 100 * 2**30 and hyb.headroom_bytes >= 0
        # nothing fits the GPU alone: the scheme's row is its hybrid deployment (one deployment per row)
        assert (sp.n_cpu_moe, sp.fits, sp.headroom_bytes, sp.speed.decode_tps, sp.memory.host_bytes) == (
            n, True, hyb.headroom_bytes, hyb.speed.decode_tps, hyb.host_bytes)
    by = {s.id: s.deployments[1].n_cpu_moe for s in plan.schemes}
    assert by == {"Q4_K_M": 52, "DQ3_K_M": 48, "UD-Q2_K_XL": 43}


def test_deployments_ranked_by_measured_score_and_the_pick_is_hybrid():
    plan = make_plan(REQ)
    rec = plan.recommendation
    assert rec.placement == "hybrid" and rec.scheme == "DQ3_K_M"
    ranked = [(d.scheme, d.placement, d.n_cpu_moe, d.score) for d in rec.deployments]
    # the paper's weighted scores (Table 2): DQ3_K_M 85.53 > Q4_K_M 85.24 > UD-Q2_K_XL 85.02
    assert ranked == [("DQ3_K_M", "hybrid", 48, 85.53), ("Q4_K_M", "hybrid", 52, 85.24),
                      ("UD-Q2_K_XL", "hybrid", 43, 85.02)]
    assert [d.rank for d in rec.deployments] == [1, 2, 3]
    for d in rec.deployments:
        sp = plan.scheme(d.scheme)
        assert d.decode_tps == sp.deployments[1].speed.decode_tps
    doc = rec.to_dict()
    assert doc["placement"] == "hybrid" and [x["scheme"] for x in doc["deployments"]] == ["DQ3_K_M", "Q4_K_M",
                                                                                          "UD-Q2_K_XL"]
    s0 = plan.to_dict()["schemes"][0]
    assert [x["placement"] for x in s0["deployments"]] == ["gpu", "hybrid"]
    assert set(s0["deployments"][1]["speed"]) == {"prefill_tps", "decode_tps", "prompt_tokens", "depth_tokens",
                                                  "bound"}


def test_gpu_only_fits_no_hybrid_entry():
    plan = make_plan(PlanRequest(device="h200", gpus=8, schemes=["Q4_K_M", "UD-Q2_K_XL"]))
    for sp in plan.schemes:
        assert [(d.placement, d.fits) for d in sp.deployments] == [("gpu", True)]
    rec = plan.recommendation
    assert rec.placement is None and [(d.placement) for d in rec.deployments] == ["gpu", "gpu"]
    assert rec.deployments[0].scheme == rec.scheme


def test_min_tps_drops_slow_deployments():
    plan = make_plan(REQ)
    tps = {d.scheme: d.decode_tps for d in plan.recommendation.deployments}
    cut = (tps["UD-Q2_K_XL"] + tps["DQ3_K_M"]) / 2       # UD-Q2_K_XL reads the fewest bytes: the fastest
    assert tps["UD-Q2_K_XL"] > cut > tps["DQ3_K_M"] > tps["Q4_K_M"]
    kept = make_plan(replace(REQ, min_tps=cut))
    assert [(d.scheme, d.placement) for d in kept.recommendation.deployments] == [("UD-Q2_K_XL", "hybrid")]
    assert kept.recommendation.scheme == "UD-Q2_K_XL"
    # the schemes are planned as their hybrid deployments: the slow ones are dropped as schemes
    assert [s.id for s in kept.schemes] == ["UD-Q2_K_XL"]
    assert any("--min-tps" in n and f"DQ3_K_M ({tps['DQ3_K_M']:.1f} tok/s" in n for n in kept.notes)


def test_dense_model_has_no_deployments():
    sp = make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="a100", gpus=1,
                               schemes=["Q4_K_M"])).scheme("Q4_K_M")
    assert sp.deployments == []


# ------------------------------------------------------------------ measured kernels (roofline per tensor)

def _r1_q4():
    req = PlanRequest(device="h200", gpus=1, schemes=["Q4_K_M"])
    model, kv = resolve_model(req, model_input(req))
    return model.hparams, make_plan(req).scheme("Q4_K_M"), kv


# (decode bytes/s, prefill FLOP/s) per type of R1 Q4_K_M
_RATES = {"f32": (40e9, 1e11), "q4_K": (20e9, 2e11), "q5_0": (25e9, 1e11), "q6_K": (10e9, 1e11)}


def _kernels(rates=None, *, attention=None, layer_seconds=None, token_seconds=0.0, **per_type) -> HostKernels:
    """HostKernels of these (decode, prefill) rates; per_type: {type: {TypeKernels field: value}}."""
    types = {t: replace(TypeKernels(d, f), **per_type.get(t, {})) for t, (d, f) in (rates or _RATES).items()}
    return HostKernels(2, types, attention or {}, layer_seconds or {}, token_seconds)


def _r1_q4_on_one_cpu(bandwidth_gbs: float, tflops: float, kv_mode: str | None = None):
    """R1 Q4_K_M planned onto one CPU device, and a speed function of the host's measured kernels."""
    from planner.core.llamacpp.memory import Slot

    hp, sp, kv = _r1_q4()
    opts = memory_options(PlanRequest(kv_mode=kv_mode), kv_mode or kv)
    mem = plan_memory(hp, sp.tensors, [Slot("CPU0", 10**13, 0)], opts)
    host = Processor(HOST, "CPU-measured", bandwidth_gbs, tflops, _kernels())

    def speed(kernels, depth: int = 0):
        h = replace(host, kernels=kernels)
        return llamacpp_speed(hp, sp.tensors, mem, opts, {"CPU0": replace(h, label="CPU0")}, h, factors(), 512,
                              depth)
    return hp, sp, speed


def _active_sums(hp, sp, what) -> dict[str, float]:
    """Per type, the sum of what(tensor, elements) over what a token reads: all but token_embd, the routed
    experts at n_expert_used / n_expert."""
    active = hp.n_expert_used / hp.n_expert
    out: dict[str, float] = {}
    for t in sp.tensors:
        if t.name == "token_embd.weight":
            continue
        n = 1
        for x in t.shape:
            n *= x
        v = what(t, n)
        if v:
            out[t.type] = out.get(t.type, 0.0) + v * (active if "_exps" in t.name else 1.0)
    return out


def test_measured_kernels_set_each_types_decode_rate():
    hp, sp, speed = _r1_q4_on_one_cpu(50.0, 0.2)
    s = speed(_kernels())
    # every type's active bytes over its own measured decode rate (f32 at its own; token_embd on the host)
    per_type = _active_sums(hp, sp, lambda t, n: t.bytes)
    assert set(per_type) == {"f32", "q4_K", "q5_0", "q6_K"}
    want = sum(b / _RATES[t][0] for t, b in per_type.items())
    assert s.decode_seconds["CPU0"] == pytest.approx(want, rel=1e-9)
    # a q6_K weight at 5 GB/s costs twice its 10 GB/s time: halving q6_K's rate adds its bytes / 10 GB/s
    s2 = speed(_kernels({**_RATES, "q6_K": (5e9, 1e11)}))
    assert s2.decode_seconds["CPU0"] - s.decode_seconds["CPU0"] == pytest.approx(per_type["q6_K"] / 10e9, rel=1e-9)


def test_measured_cost_per_row_adds_the_rows_a_token_reads():
    hp, sp, speed = _r1_q4_on_one_cpu(50.0, 0.2)
    # R1's q6_K rows a token reads: every row of its q6_K matrices but only 8 of 256 experts' rows
    rows = _active_sums(hp, sp, lambda t, n: n // t.shape[0] if t.type == "q6_K" else 0)["q6_K"]
    assert rows > 1e5
    more = speed(_kernels(q6_K={"row_seconds": 1e-7})).decode_seconds["CPU0"]
    assert more - speed(_kernels()).decode_seconds["CPU0"] == pytest.approx(rows * 1e-7, rel=1e-9)


def test_measured_expert_decode_rate_reads_the_active_experts_bytes():
    hp, sp, speed = _r1_q4_on_one_cpu(50.0, 0.2)
    # the active routed experts' q4_K bytes: at the MUL_MAT_ID rate; the rest of q4_K at the mat-vec's
    exp_b = _active_sums(hp, sp, lambda t, n: t.bytes if "_exps" in t.name and t.type == "q4_K" else 0)["q4_K"]
    base = speed(_kernels()).decode_seconds["CPU0"]
    slow = speed(_kernels(q4_K={"expert_decode_bytes_per_s": 10e9})).decode_seconds["CPU0"]
    assert slow - base == pytest.approx(exp_b * (1 / 10e9 - 1 / 20e9), rel=1e-9)


def test_measured_layer_cost_adds_per_layer_kind_and_token():
    hp, sp, speed = _r1_q4_on_one_cpu(50.0, 0.2)
    base = speed(_kernels())
    s = speed(_kernels(layer_seconds={"mla_dense": 10e-6, "mla_moe": 100e-6, "gqa_dense": 1.0}, token_seconds=7e-6))
    # R1: 3 dense MLA layers and 58 MoE ones on CPU0 (the GQA figure is not R1's); the token's own cost on
    # the host that starts it (token_embd's place)
    assert s.decode_seconds["CPU0"] - base.decode_seconds["CPU0"] == pytest.approx(3 * 10e-6 + 58 * 100e-6, rel=1e-9)
    assert s.decode_seconds[HOST] - base.decode_seconds[HOST] == pytest.approx(7e-6, rel=1e-9)
    assert s.prefill_tps == base.prefill_tps


def test_measured_flash_attention_sets_the_cost_of_each_cached_token():
    # a bandwidth so high that reading the latent rows never bounds it: the math at the measured cost does
    kern = _kernels(attention={"gqa": AttentionCost(5e-9, 30e-12), "mla": AttentionCost(2e-9, 10e-12)})
    for kv_mode, (fixed, per_dim) in (("mla", (2e-9, 10e-12)), ("legacy", (5e-9, 30e-12))):
        _, _, speed = _r1_q4_on_one_cpu(1e6, 0.2, kv_mode)
        s = speed(kern, 4096)
        dims = 512 + 64 + 512 if kv_mode == "mla" else 128 + 64 + 128     # K + V dims per head
        # R1: 61 layers x 128 heads x (the fixed part + the part per dim x dims) per cached token
        assert s.decode_per_depth_s == pytest.approx(61 * 128 * (fixed + per_dim * dims), rel=1e-9)
        assert s.decode_tps_at(0) > s.decode_tps_at(4096)
    # without a measured cost for the class: the dense rate x the "attn" factor
    _, _, speed = _r1_q4_on_one_cpu(1e6, 0.2, "mla")
    s = speed(_kernels())
    fac = factors()
    assert s.decode_per_depth_s == pytest.approx(61 * 128 * 2 * 1088 / (0.2e12 * fac.prefill["CPU-measured"]["attn"]),
                                                 rel=1e-9)


def test_measured_expert_products_set_the_routed_experts_prefill():
    hp, sp, speed = _r1_q4_on_one_cpu(1e6, 1e3)       # memory and attention never bound it

    def prefill_seconds(k) -> float:
        return 512 / speed(k).prefill_tps
    # the routed experts' FLOPs per prompt token, per type: 2 x elements x n_expert_used / n_expert
    exp_flops = _active_sums(hp, sp, lambda t, n: 2.0 * n if "_exps" in t.name else 0)
    assert set(exp_flops) == {"q4_K", "q6_K"}
    # a measured MUL_MAT_ID rate of a quarter of q4_K's gemm: the q4_K experts take 4x their gemm time;
    # q6_K has no expert figure and stays at its gemm rate
    slow = _kernels(q4_K={"expert_prefill_flops": 0.5e11})
    extra = exp_flops["q4_K"] * 512 * (1 / 0.5e11 - 1 / _RATES["q4_K"][1])
    assert prefill_seconds(slow) - prefill_seconds(_kernels()) == pytest.approx(extra, rel=1e-6)


def test_measured_src_conversion_adds_per_product_and_token():
    """A ubatch's product converts its src1 (the row length x the tokens) once: at a measured cost per
    element, every non-expert matrix of the type adds row length x ubatch x that cost."""
    hp, sp, speed = _r1_q4_on_one_cpu(1e6, 1e3)

    def prefill_seconds(k) -> float:
        return 512 / speed(k).prefill_tps
    # the row lengths (shape[0]) of the non-expert matrices, per type (token_embd is read by rows)
    cols = _active_sums(hp, sp, lambda t, n: t.shape[0] if len(t.shape) >= 2 and "_exps" not in t.name else 0)
    assert cols["q4_K"] > 100 * 7168
    with_src = _kernels(q4_K={"prefill_src_seconds": 1e-9})
    assert prefill_seconds(with_src) - prefill_seconds(_kernels()) == pytest.approx(cols["q4_K"] * 512 * 1e-9,
                                                                                   rel=1e-6)


def test_expert_probe_measures_ggml_mul_mat_id():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.hardware.kernel_probe import PROBE_TYPES, probe_experts

    require_llama_cpp("llama-bench")
    res = probe_experts(locate().folders, 1, types={k: PROBE_TYPES[k] for k in ("q8_0", "q4_K")})
    assert set(res) == {"q8_0", "q4_K"}
    for t, flops in res.items():
        assert 1e8 < flops < 1e13, (t, flops)


def test_attention_probe_measures_ggml_flash_attention():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.hardware.kernel_probe import ATTENTION_SHAPES, probe_graph

    require_llama_cpp("llama-bench")
    res = probe_graph(locate().folders, 1)
    assert set(res["attention"]) == set(ATTENTION_SHAPES) == {"mla", "gqa"}
    # one thread of any x86/ARM core: per query head and cached token well under ten microseconds, of which
    # each K+V dim of a 1088-dim MLA head costs at least a femtosecond. A quiet 2-core machine measures
    # about 3 ns + 22 ps per dim (bench/out/speed.md); one shared with other work 0.8-1.07 ns per dim (load
    # 8-12): the bounds leave 10x above that and still catch a unit error (x1000)
    for c, a in res["attention"].items():
        assert 0 <= a["head_token_seconds"] < 1e-5 and 1e-15 < a["dim_seconds"] < 1e-8, (c, a)
        assert a["head_token_seconds"] + 1088 * a["dim_seconds"] < 1e-5


def test_kernel_probe_measures_the_ggml_library():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.hardware.kernel_probe import PROBE_TYPES, probe_kernels

    require_llama_cpp("llama-bench")
    res = probe_kernels(locate().folders, 1, types={k: PROBE_TYPES[k] for k in ("q8_0", "q4_0")})
    for t in ("q8_0", "q4_0"):
        dec, pre, _, per_row, src = res[t]
        assert 0 <= per_row < 1e-4
        assert 1e8 < dec < 1e12 and 1e8 < pre < 1e14
        # converting a src1 element costs between nothing and what 4096 of the product's FLOPs cost
        assert 0 <= src < 4096 * 2 / pre
    # x86 with AVX2: llama.cpp repacks q4_0 (q4_0_8x8) and keeps q8_0 in the plain CPU buffer
    import platform

    if platform.machine() == "x86_64" and "avx2" in open("/proc/cpuinfo").read():
        assert res["q4_0"][2] is True and res["q8_0"][2] is False


# ------------------------------------------------------------------ decode vs depth (the TUI plot's data)

def test_decode_curve_is_the_plan_at_each_depth():
    req = PlanRequest(device="h100", gpus=8, schemes=["Q4_K_M"], ctx=32768)
    sp = make_plan(req).scheme("Q4_K_M")
    curve = decode_curve(sp.speed, 32768, 5)
    assert [d for d, _ in curve] == [0, 8192, 16384, 24576, 32768]
    for d, tps in curve:
        at = make_plan(replace(req, depth=d)).scheme("Q4_K_M").speed.decode_tps
        assert tps == pytest.approx(at, rel=1e-9)
    ys = [t for _, t in curve]
    assert ys == sorted(ys, reverse=True) and ys[-1] < ys[0]
    # MLA: 1152 B of latent cache per layer and token; 61 layers x 32768 tokens added to every token's read
    assert 1 / ys[-1] - 1 / ys[0] == pytest.approx(32768 * sp.speed.decode_per_depth_s, rel=1e-9)


def test_speed_plot_points():
    from planner.tui.widgets.speed_plot import speed_points

    sp = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], depth=4096)).scheme("Q4_K_M")
    pts = speed_points(sp, 32768)
    assert len(pts) == 17 and pts[0][0] == 0 and pts[-1][0] == 32768
    assert pts[8] == (16384, pytest.approx(sp.speed.decode_tps_at(16384)))
    # the request's own depth lies on the curve
    assert sp.speed.decode_tps_at(4096) == pytest.approx(sp.speed.decode_tps, rel=1e-9)
    assert speed_points(None, 32768) == [] and speed_points(replace(sp, speed=None), 32768) == []


def test_speed_plot_widget_renders():
    import asyncio

    from textual.app import App

    from planner.tui.widgets.speed_plot import SpeedDepthPlot

    sp = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], depth=4096)).scheme("Q4_K_M")

    class One(App):
        def compose(self):
            yield SpeedDepthPlot(id="plot-speed")

    async def run():
        app = One()
        async with app.run_test(size=(100, 30)) as pilot:
            w = app.query_one(SpeedDepthPlot)
            w.show(None, 32768)          # nothing selected: a title only, no error
            await pilot.pause()
            empty = w.plt.build()
            w.show(sp, 32768)
            await pilot.pause()
            return empty, w.plt.build()

    empty, full = asyncio.run(run())

    def braille(t: str) -> int:
        return sum(1 for ch in t if 0x2800 < ord(ch) <= 0x28FF)

    # the curve is drawn (braille dots) only with a prediction
    assert braille(empty) == 0 and braille(full) > 20


def test_a_hybrid_plan_with_unknown_host_ram_is_not_ranked():
    # R1 BF16 on 8 H100: only hybrid fits the GPUs, with over 1,100 GiB of experts in host RAM
    req = PlanRequest(device="h100", gpus=8, schemes=["BF16", "Q4_K_M"])
    plan = make_plan(req)
    bf16 = plan.scheme("BF16")
    gpu, hyb = bf16.deployments
    assert (gpu.fits, hyb.fits, hyb.host_ram_checked, hyb.usable) == (False, True, False, False)
    assert hyb.host_bytes > 1100 * 2**30
    assert hyb.to_dict()["host_ram_checked"] is False
    assert [(d.scheme, d.placement) for d in plan.recommendation.deployments] == [("Q4_K_M", "gpu")]
    assert any("--host-ram" in n for n in bf16.notes)
    # with the host's RAM given, the same hybrid is checked against it: 1.5 TiB holds it, 512 GiB does not
    big = make_plan(replace(req, host_ram=1536)).scheme("BF16").deployments[1]
    small = make_plan(replace(req, host_ram=512)).scheme("BF16").deployments[1]
    assert (big.host_ram_checked, big.usable) == (True, True)
    assert (small.host_ram_checked, small.fits, small.usable) == (True, False, False)


def test_overhead_probe_solves_each_layer_kinds_cost():
    from planner.engines.llamacpp.overhead_probe import SPAN, solve

    # skeletons of a host where a token costs 40 us, an MLA dense layer 30 us, an MoE layer 50 us, GQA 20 us
    t = {"mla-short": 40e-6 + 30e-6 + 50e-6, "mla-moe": 40e-6 + 30e-6 + (1 + SPAN) * 50e-6,
         "mla-dense": 40e-6 + (1 + SPAN) * 30e-6 + 50e-6, "gqa-short": 40e-6 + 2 * 20e-6,
         "gqa-long": 40e-6 + (2 + SPAN) * 20e-6}
    r = solve(t)
    assert r["layer_seconds"] == pytest.approx({"mla_moe": 50e-6, "mla_dense": 30e-6, "gqa_dense": 20e-6})
    assert r["token_seconds"] == pytest.approx(40e-6)
    # a long skeleton timed a hair faster than the short one: 0, not a negative cost
    assert solve(dict(t, **{"gqa-long": t["gqa-short"] * 0.99}))["layer_seconds"]["gqa_dense"] == 0.0


def test_overhead_probe_measures_llama_cpp_per_layer():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.engines.llamacpp.overhead_probe import probe_overhead

    require_llama_cpp("llama-bench")
    r = probe_overhead(locate().binary("llama-bench"), 1, reps=3)
    ls = r["layer_seconds"]
    # one thread: an MoE layer (router, top-k, three MUL_MAT_IDs over 64 experts, a shared expert) costs
    # more than a GQA layer, each between 1 us and 1 ms per token
    assert ls["mla_moe"] > ls["gqa_dense"]
    for k, v in ls.items():
        assert 1e-6 < v < 1e-3, (k, v)
    assert r["skeleton_seconds"]["mla-moe"] > r["skeleton_seconds"]["mla-short"]


def test_expert_decode_probe_measures_ggml_mul_mat_id():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.hardware.kernel_probe import PROBE_TYPES, probe_expert_decode

    require_llama_cpp("llama-bench")
    res = probe_expert_decode(locate().folders, 1, {"q4_K": 0.0}, types={k: PROBE_TYPES[k] for k in ("q8_0", "q4_K")})
    assert set(res) == {"q8_0", "q4_K"}
    # one thread streaming 384 MiB of experts: between 0.1 and 1000 GB/s
    for t, rate in res.items():
        assert 1e8 < rate < 1e12, (t, rate)


def test_host_kernels_json_round_trip_and_bad_figures():
    from planner.errors import PlannerError

    k = _kernels(attention={"mla": AttentionCost(2e-9, 1e-11)}, layer_seconds={"mla_moe": 5e-5}, token_seconds=4e-5,
                 q4_K={"expert_decode_bytes_per_s": 9e9, "expert_prefill_flops": 5e10, "row_seconds": 3e-9})
    assert HostKernels.from_json(k.to_json()) == k
    bad = k.to_json()
    bad["kernels"]["q4_K"]["decode_bytes_per_s"] = -1
    with pytest.raises(PlannerError):
        HostKernels.from_json(bad)
    with pytest.raises(PlannerError):
        HostKernels.from_json({"threads": 2})


def test_cached_kernels_of_another_probe_method_are_measured_again(tmp_path, monkeypatch):
    """The host's kernel figures are cached with the probe's method: a cache written by another method
    (or by none) is not used, a stored one is read back with its figures."""
    import json

    from planner.hardware.host import cached_host_kernels, store_host_kernels
    from planner.hardware.kernel_probe import PROBE_METHOD

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    k = _kernels(q4_K={"prefill_src_seconds": 3e-10})
    store_host_kernels(k)
    back = cached_host_kernels(2)
    assert back is not None and back.types["q4_K"].prefill_src_seconds == 3e-10
    assert back.types["q6_K"].decode_bytes_per_s == _RATES["q6_K"][0]
    f = tmp_path / "dq-planner" / "host-kernels.json"
    data = json.loads(f.read_text())
    assert data["method"] == PROBE_METHOD
    for stale in ({**data, "method": PROBE_METHOD - 1}, {k_: v for k_, v in data.items() if k_ != "method"}):
        f.write_text(json.dumps(stale))
        assert cached_host_kernels(2) is None
    f.write_text(json.dumps(data))
    assert cached_host_kernels(2) is not None and cached_host_kernels(3) is None     # another thread count
