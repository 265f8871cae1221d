"""GPU-only and hybrid deployments per scheme, ranked; a host's measured ggml kernels in the speed model
(the roofline per tensor); the decode-vs-depth curve of the TUI's speed plot."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.core.fit import fewest_cpu_moe
from planner.core.gguf_plan import memory_options, resolve_model
from planner.core.hardware_plan import resolve_hardware
from planner.core.memory import LayerWeights, plan_memory
from planner.core.plan import PlanRequest
from planner.core.speed import HOST, Processor, decode_curve, factors, llamacpp_speed
from planner.planning import make_plan, model_input

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
        assert gpu.speed.decode_tps == sp.speed.decode_tps        # the request's own placement
        # the hybrid keeps the fewest expert layers in host RAM that fit, checked exhaustively
        lw = LayerWeights.of(hp, sp.tensors)
        n = next(k for k in range(hp.n_layer + 1)
                 if plan_memory(hp, sp.tensors, hw.slots, replace(opts, n_cpu_moe=k), lw).fits)
        assert (hyb.placement, hyb.n_cpu_moe, hyb.fits) == ("hybrid", n, True)
        assert n == fewest_cpu_moe(hp, sp.tensors, hw.slots, opts, lw)
        # the experts' bytes of those layers are read at the host's bandwidth: slower, host-bound
        assert hyb.speed.decode_tps < gpu.speed.decode_tps and hyb.speed.bound == HOST
        assert hyb.host_bytes > 100 * 2**30 and hyb.headroom_bytes >= 0
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
    assert any("dropped deployments" in n and "DQ3_K_M hybrid" in n for n in kept.notes)


def test_dense_model_has_no_deployments():
    sp = make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="a100", gpus=1,
                               schemes=["Q4_K_M"])).scheme("Q4_K_M")
    assert sp.deployments == []


# ------------------------------------------------------------------ measured kernels (roofline per tensor)

def _r1_q4():
    req = PlanRequest(device="h200", gpus=1, schemes=["Q4_K_M"])
    model, kv = resolve_model(req, model_input(req))
    return model.hparams, make_plan(req).scheme("Q4_K_M"), kv


def test_measured_kernels_set_each_types_decode_rate():
    from planner.core.memory import Slot

    hp, sp, kv = _r1_q4()
    opts = memory_options(PlanRequest(), kv)
    slot = Slot("CPU0", 10**13, 0)
    mem = plan_memory(hp, sp.tensors, [slot], opts)
    kern = (("f32", 40e9, 1e11), ("q4_K", 20e9, 2e11), ("q5_0", 25e9, 1e11), ("q6_K", 10e9, 1e11))
    host = Processor(HOST, "CPU-measured", 50.0, 0.2, kern)
    procs = {"CPU0": replace(host, label="CPU0")}
    s = llamacpp_speed(hp, sp.tensors, mem, opts, procs, host, factors(), 512, 0)
    # every type's active bytes over its own measured decode rate (f32 at its own; token_embd on the host)
    active = hp.n_expert_used / hp.n_expert
    per_type: dict[str, float] = {}
    for t in sp.tensors:
        if t.name == "token_embd.weight":
            continue
        share = active if "_exps" in t.name else 1.0
        per_type[t.type] = per_type.get(t.type, 0.0) + t.bytes * share
    assert set(per_type) == {"f32", "q4_K", "q5_0", "q6_K"}
    want = sum(b / dict((k, d) for k, d, _ in kern)[t] for t, b in per_type.items())
    assert s.decode_seconds["CPU0"] == pytest.approx(want, rel=1e-9)
    # a q6_K weight at 10 GB/s costs twice its q4_K-rate time: halving q6_K's rate adds its bytes / 10 GB/s
    slower = replace(host, kernels=(("f32", 40e9, 1e11), ("q4_K", 20e9, 2e11), ("q5_0", 25e9, 1e11),
                                    ("q6_K", 5e9, 1e11)))
    s2 = llamacpp_speed(hp, sp.tensors, mem, opts, {"CPU0": replace(slower, label="CPU0")}, slower,
                        factors(), 512, 0)
    assert s2.decode_seconds["CPU0"] - s.decode_seconds["CPU0"] == pytest.approx(per_type["q6_K"] / 10e9, rel=1e-9)


_KERN = (("f32", 40e9, 1e11), ("q4_K", 20e9, 2e11), ("q5_0", 25e9, 1e11), ("q6_K", 10e9, 1e11))


def _r1_q4_on_one_cpu(bandwidth_gbs: float, tflops: float):
    """R1 Q4_K_M planned onto one CPU device, and a speed function of the host's measured kernel rows."""
    from planner.core.memory import Slot

    hp, sp, kv = _r1_q4()
    opts = memory_options(PlanRequest(), kv)
    mem = plan_memory(hp, sp.tensors, [Slot("CPU0", 10**13, 0)], opts)
    host = Processor(HOST, "CPU-measured", bandwidth_gbs, tflops, _KERN)

    def speed(kernels):
        h = replace(host, kernels=kernels)
        return llamacpp_speed(hp, sp.tensors, mem, opts, {"CPU0": replace(h, label="CPU0")}, h, factors(), 512, 0)
    return hp, sp, speed


def test_measured_cost_per_row_adds_the_rows_a_token_reads():
    hp, sp, speed = _r1_q4_on_one_cpu(50.0, 0.2)
    kern = _KERN

    def decode_s(k) -> float:
        return speed(k).decode_seconds["CPU0"]
    # R1's q6_K rows a token reads: every row of its q6_K matrices but only 8 of 256 experts' rows
    active = hp.n_expert_used / hp.n_expert
    rows = 0.0
    for t in sp.tensors:
        if t.type == "q6_K" and t.name != "token_embd.weight":
            n = 1
            for x in t.shape:
                n *= x
            rows += n // t.shape[0] * (active if "_exps" in t.name else 1.0)
    assert rows > 0
    assert decode_s(kern + (("rows:q6_K", 1e-7, 0.0),)) - decode_s(kern) == pytest.approx(rows * 1e-7, rel=1e-9)


def test_measured_flash_attention_sets_the_cost_of_each_cached_token():
    from planner.core.memory import Slot

    hp, sp, kv = _r1_q4()
    slot = Slot("CPU0", 10**13, 0)
    kern = (("attention:gqa", 0.0, 1e9), ("attention:mla", 0.0, 20e9), ("f32", 40e9, 1e11), ("q4_K", 20e9, 2e11),
            ("q5_0", 25e9, 1e11), ("q6_K", 10e9, 1e11))
    # a bandwidth so high that reading the latent rows never bounds it: the math at the measured rate does
    host = Processor(HOST, "CPU-measured", 1e6, 0.2, kern)
    procs = {"CPU0": replace(host, label="CPU0")}
    for kv_mode, rate in (("mla", 20e9), ("legacy", 1e9)):
        opts = memory_options(PlanRequest(kv_mode=kv_mode), kv_mode)
        mem = plan_memory(hp, sp.tensors, [slot], opts)
        s = llamacpp_speed(hp, sp.tensors, mem, opts, procs, host, factors(), 512, 4096)
        dims = 512 + 64 + 512 if kv_mode == "mla" else 128 + 64 + 128     # K + V dims per head
        # R1: 61 layers x 128 heads x 2 FLOPs x (K + V dims) per cached token, at the class's measured rate
        assert s.decode_per_depth_s == pytest.approx(61 * 128 * 2 * dims / rate, rel=1e-9)
    # without a measured rate for the class: the dense rate x the "attn" factor
    bare = replace(host, kernels=kern[2:])
    opts = memory_options(PlanRequest(), "mla")
    mem = plan_memory(hp, sp.tensors, [slot], opts)
    s = llamacpp_speed(hp, sp.tensors, mem, opts, {"CPU0": replace(bare, label="CPU0")}, bare, factors(), 512, 0)
    fac = factors()
    assert s.decode_per_depth_s == pytest.approx(61 * 128 * 2 * 1088 / (0.2e12 * fac.prefill["CPU-measured"]["attn"]),
                                                 rel=1e-9)


def test_measured_expert_products_set_the_routed_experts_prefill():
    hp, sp, speed = _r1_q4_on_one_cpu(1e6, 1e3)       # memory and attention never bound it
    kern = _KERN

    def prefill_seconds(k) -> float:
        return 512 / speed(k).prefill_tps
    # the routed experts' FLOPs per prompt token, per type: 2 x elements x n_expert_used / n_expert
    active = hp.n_expert_used / hp.n_expert
    exp_flops: dict[str, float] = {}
    for t in sp.tensors:
        if "_exps" in t.name:
            n = 1
            for x in t.shape:
                n *= x
            exp_flops[t.type] = exp_flops.get(t.type, 0.0) + 2.0 * n * active
    assert set(exp_flops) == {"q4_K", "q6_K"}
    rates = dict((t, f) for t, _, f in kern)
    # a measured MUL_MAT_ID rate of a quarter of q4_K's gemm: the q4_K experts take 4x their gemm time;
    # q6_K has no expert figure and stays at its gemm rate
    slow = kern + (("experts:q4_K", 0.0, 0.5e11),)
    extra = exp_flops["q4_K"] * 512 * (1 / 0.5e11 - 1 / rates["q4_K"])
    assert prefill_seconds(slow) - prefill_seconds(kern) == pytest.approx(extra, rel=1e-6)


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
    # one thread of any x86/ARM core: between 0.1 and 1000 GFLOP/s of f16 dot products and multiply-adds
    for c, flops in res["attention"].items():
        assert 1e8 < flops < 1e12, (c, flops)


def test_kernel_probe_measures_the_ggml_library():
    from llamacpp_support import require_llama_cpp

    from planner.engines.llamacpp.locate import locate
    from planner.hardware.kernel_probe import PROBE_TYPES, probe_kernels

    require_llama_cpp("llama-bench")
    res = probe_kernels(locate().folders, 1, types={k: PROBE_TYPES[k] for k in ("q8_0", "q4_0")})
    for t in ("q8_0", "q4_0"):
        dec, pre, _, per_row = res[t]
        assert 0 <= per_row < 1e-4
        assert 1e8 < dec < 1e12 and 1e8 < pre < 1e14
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
