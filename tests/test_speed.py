"""The throughput model (planner/core/llamacpp/speed.py) with figures: only the active experts are read per token,
the devices of a layer split run one after another, host-resident experts at the host's bandwidth, and
--n-cpu-moe auto is the smallest count that fits (checked exhaustively)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from planner.core.llamacpp.fit import fewest_cpu_moe
from planner.core.llamacpp.plan_schemes import memory_options
from planner.core.devices.hardware import resolve_hardware
from planner.core.llamacpp.memory import LayerWeights, Slot, plan_memory
from planner.core.plan import PlanRequest
from planner.core.llamacpp.speed import HOST, Processor, factors, llamacpp_speed, type_family
from planner.make_plan import make_plan, model_input
from planner.core.llamacpp.plan_schemes import resolve_model

GB = 1e9
EXPS = re.compile(r"\.ffn_(up|down|gate)_exps")


def _r1(scheme="Q4_K_M"):
    req = PlanRequest(device="h200", gpus=1, schemes=[scheme])
    model, kv = resolve_model(req, model_input(req))
    sp = make_plan(req).scheme(scheme)
    return model.hparams, sp, kv


def _speed(hp, tensors, slots, procs, host, kv_mode="mla", depth=0, n_cpu_moe=0):
    opts = replace(memory_options(PlanRequest(), kv_mode), n_cpu_moe=n_cpu_moe)
    mem = plan_memory(hp, tensors, slots, opts)
    return llamacpp_speed(hp, tensors, mem, opts, procs, host, factors(), 512, depth), mem


BIG = Slot("GPU0", 10**13, 0)
GPU = Processor("GPU0", "CUDA", 1000.0, 500.0)
CPU = Processor(HOST, "CPU", 100.0, 5.0)
# the decode efficiency factors as profiles/speed/llamacpp.toml gives them (read from the file itself)
_DECODE = tomllib.loads((Path(__file__).resolve().parents[1] / "profiles" / "speed" / "llamacpp.toml").read_text())["decode"]
CUDA_K = _DECODE["CUDA"]["k"]                      # R1 Q4_K_M is mostly k-family bytes
CPU_DEFAULT = _DECODE["CPU"]["default"]


def test_decode_reads_only_the_active_experts():
    hp, sp, kv = _r1()
    assert (hp.n_expert, hp.n_expert_used) == (256, 8)
    s, _ = _speed(hp, sp.tensors, [BIG], {"GPU0": GPU}, CPU, kv)
    exps = sum(t.bytes for t in sp.tensors if EXPS.search(t.name))
    embd = next(t for t in sp.tensors if t.name == "token_embd.weight")
    rest = sum(t.bytes for t in sp.tensors if not EXPS.search(t.name)) - embd.bytes
    # the GPU reads every non-expert weight and 8/256 of the routed experts' bytes
    assert s.decode_bytes["GPU0"] == pytest.approx(rest + exps * 8 / 256, rel=1e-9)
    # R1 Q4_K_M: 377 GiB of weights, ~22 GB read per token (not 405 GB as if every expert were read)
    assert sp.size_bytes / GB == pytest.approx(404.5, abs=0.5)
    assert 20 * GB < s.decode_bytes["GPU0"] < 24 * GB
    # the host reads one row of token_embd per token
    assert s.decode_bytes[HOST] == embd.bytes // hp.n_vocab
    # time = bytes / (bandwidth x the k-family factor): decode tok/s follows
    t = sum(s.decode_seconds.values())
    assert s.decode_tps == pytest.approx(1 / t)
    # beyond the bytes, each MoE layer's fixed cost on the backend (the dense lead layers: none)
    fac = factors()
    moe_layers = hp.n_layer - hp.n_layer_dense_lead
    fixed = moe_layers * fac.layer_seconds("CUDA", "mla_moe") + \
        hp.n_layer_dense_lead * fac.layer_seconds("CUDA", "mla_dense")
    assert 1 / (t - fixed) == pytest.approx(1000 * GB * CUDA_K / s.decode_bytes["GPU0"], rel=0.05)


def test_fixed_cost_per_layer_kind_and_backend():
    """A layer's fixed cost is charged per layer of its kind on the place that runs it: R1's 58 MoE and 3
    dense MLA layers on the GPU, none on the host that holds only token_embd; a backend without its own
    figures takes the default's."""
    from planner.core.llamacpp.speed import Factors

    hp, sp, kv = _r1()
    base = factors()
    costed = Factors(base.decode, base.prefill, {"CUDA": {"mla_moe": 100.0, "mla_dense": 40.0, "default": 7.0},
                                                 "default": {"default": 3.0}}, base.links)
    free = Factors(base.decode, base.prefill, {"default": {"default": 0.0}}, base.links)
    opts = memory_options(PlanRequest(), kv)
    mem = plan_memory(hp, sp.tensors, [BIG], opts)
    a = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": GPU}, CPU, costed, 512, 0)
    b = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": GPU}, CPU, free, 512, 0)
    assert (hp.n_layer, hp.n_layer_dense_lead) == (61, 3)
    assert a.decode_seconds["GPU0"] - b.decode_seconds["GPU0"] == pytest.approx(58 * 100e-6 + 3 * 40e-6, rel=1e-9)
    assert a.decode_seconds[HOST] == b.decode_seconds[HOST]
    # a ubatch pays them once per graph evaluation: a 512-token prompt in one ubatch
    assert 512 / a.prefill_tps - 512 / b.prefill_tps == pytest.approx(58 * 100e-6 + 3 * 40e-6, rel=1e-6)
    # a ROCm GPU has no entry here: the default backend's 3 us for every kind
    rocm = Processor("GPU0", "ROCm", 1000.0, 500.0)
    c = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": rocm}, CPU, costed, 512, 0)
    d = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": rocm}, CPU, free, 512, 0)
    assert c.decode_seconds["GPU0"] - d.decode_seconds["GPU0"] == pytest.approx(61 * 3e-6, rel=1e-9)


def test_kv_cache_read_at_depth():
    hp, sp, kv = _r1()
    s0, _ = _speed(hp, sp.tensors, [BIG], {"GPU0": GPU}, CPU, kv, depth=0)
    s1, _ = _speed(hp, sp.tensors, [BIG], {"GPU0": GPU}, CPU, kv, depth=32768)
    # MLA: one latent row of 512 + 64 f16 values per layer and token = 1152 B x 61 layers x 32768
    assert s1.decode_bytes["GPU0"] - s0.decode_bytes["GPU0"] == 1152 * 61 * 32768
    assert s1.decode_tps < s0.decode_tps


def test_layer_split_runs_sequentially():
    hp, sp, kv = _r1()
    one, _ = _speed(hp, sp.tensors, [BIG], {"GPU0": GPU}, CPU, kv)
    slots = [Slot(f"GPU{i}", 10**13, 0) for i in range(4)]
    procs = {f"GPU{i}": replace(GPU, label=f"GPU{i}") for i in range(4)}
    four, mem = _speed(hp, sp.tensors, slots, procs, CPU, kv)
    assert all(d.layers for d in mem.per_device)
    # the per-device times add up to the single device's time (each reads its quarter, in turn)
    dev = sum(v for k, v in four.decode_seconds.items() if k.startswith("GPU"))
    assert dev == pytest.approx(one.decode_seconds["GPU0"], rel=1e-9)
    # plus three PCIe hops of the hidden state: slower than one device, nowhere near 4x faster
    hops = [k for k in four.decode_seconds if k.startswith("link")]
    assert len(hops) == 4          # host (token_embd) -> GPU0 -> GPU1 -> GPU2 -> GPU3
    assert four.decode_tps < one.decode_tps
    assert four.decode_tps > 0.95 * one.decode_tps


def test_experts_in_host_ram_run_at_the_host_bandwidth():
    hp, sp, kv = _r1()
    s, mem = _speed(hp, sp.tensors, [BIG], {"GPU0": GPU}, CPU, kv, n_cpu_moe=hp.n_layer)
    exps = sum(t.bytes for t in sp.tensors if EXPS.search(t.name))
    embd = next(t for t in sp.tensors if t.name == "token_embd.weight")
    assert s.decode_bytes[HOST] == pytest.approx(exps * 8 / 256 + embd.bytes // hp.n_vocab, rel=1e-9)
    assert s.bound == HOST
    # the host's 100 GB/s at the CPU factor against 1000 GB/s on the GPU
    assert s.decode_seconds[HOST] == pytest.approx(s.decode_bytes[HOST] / (100 * GB * CPU_DEFAULT), rel=1e-6)
    assert s.decode_seconds[HOST] > 5 * s.decode_seconds["GPU0"]


def test_type_families():
    assert [type_family(t) for t in ("bf16", "q8_0", "q4_K", "iq2_xxs", "q4_0")] == \
        ["float", "legacy", "k", "iq", "legacy"]


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_n_cpu_moe_auto_is_the_smallest_count_that_fits(gpus):
    req = PlanRequest(device="a100", gpus=gpus, schemes=["Q4_K_M"], host_ram=768)
    model, kv = resolve_model(req, model_input(req))
    hp = model.hparams
    hw = resolve_hardware(req)
    opts = memory_options(req, kv, hw.host_capacity_bytes)
    sp = make_plan(replace(req, n_cpu_moe="auto")).scheme("Q4_K_M")
    lw = LayerWeights.of(hp, sp.tensors)
    exhaustive = next(n for n in range(hp.n_layer + 1)
                      if plan_memory(hp, sp.tensors, hw.slots, replace(opts, n_cpu_moe=n), lw).fits)
    assert sp.n_cpu_moe == exhaustive == fewest_cpu_moe(hp, sp.tensors, hw.slots, opts, lw)
    assert 0 < exhaustive < hp.n_layer and sp.fits
    assert not plan_memory(hp, sp.tensors, hw.slots, replace(opts, n_cpu_moe=exhaustive - 1), lw).fits


def test_n_cpu_moe_auto_checks_the_host_ram():
    # 1 x A100 with 64 GiB of RAM: the experts R1 would have to keep in RAM do not fit there
    sp = make_plan(PlanRequest(device="a100", gpus=1, schemes=["Q4_K_M"], host_ram=64,
                               n_cpu_moe="auto")).scheme("Q4_K_M")
    assert not sp.fits


def test_json_speed():
    d = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], prompt=1024, depth=4096)).to_dict()
    s = d["schemes"][0]["speed"]
    assert set(s) == {"prefill_tps", "decode_tps", "prompt_tokens", "depth_tokens", "bound"}
    assert (s["prompt_tokens"], s["depth_tokens"]) == (1024, 4096)
    assert s["decode_tps"] > 0 and s["prefill_tps"] > 0 and s["bound"].startswith("CUDA")


def test_min_tps_drops_slower_plans():
    req = PlanRequest(device="a100", gpus=1, host_ram=512, n_cpu_moe="auto", schemes=["Q4_K_M", "UD-Q2_K_XL"])
    full = make_plan(req)
    q4, q2 = (full.scheme(s).speed.decode_tps for s in ("Q4_K_M", "UD-Q2_K_XL"))
    assert q4 < q2          # more experts in host RAM and more bytes per token: slower
    cut = (q4 + q2) / 2
    kept = make_plan(replace(req, min_tps=cut))
    assert [s.id for s in kept.schemes] == ["UD-Q2_K_XL"] and kept.recommendation.scheme == "UD-Q2_K_XL"


def test_model_auto_offers_r1_with_experts_in_host_ram():
    from planner.make_plan import make_auto_plan

    req = PlanRequest(model="auto", device="a100", gpus=1, host_ram=512, n_cpu_moe="auto")
    chosen, plans = make_auto_plan(req)
    assert chosen.model.id in ("deepseek-r1", "deepseek-v3", "deepseek-v3-0324")
    sp = chosen.scheme(chosen.recommendation.scheme)
    assert sp.fits and sp.n_cpu_moe > 0 and sp.speed.bound == HOST
    # without host RAM for the experts nothing of the 671B models fits one A100
    gpu_only = make_plan(replace(req, model="deepseek-r1", n_cpu_moe=0, host_ram=None))
    assert not any(s.fits for s in gpu_only.schemes)


def test_device_host_plans_a_cpu_only_run():
    sp = make_plan(PlanRequest(device="host", host_ram=768, host_bandwidth=460.8,
                               schemes=["Q4_K_M"])).scheme("Q4_K_M")
    assert sp.fits and [d.device for d in sp.memory.per_device] == ["CPU0"]
    # all of it read from host memory: 460.8 GB/s x the CPU factor over the active bytes (+ one embedding row)
    total = sum(sp.speed.decode_bytes.values())
    assert sp.speed.decode_tps == pytest.approx(460.8e9 * CPU_DEFAULT / total, rel=0.01)


def test_tensor_parallel_splits_bytes_and_pays_all_reduces():
    from planner.core.llamacpp.speed import Link
    from planner.core.serving.speed import tp_decode

    fac = factors("hf")
    gpu = Processor("CUDA0", "CUDA", 1000.0, 500.0)
    free = Link("free", 1e9, 0.0)
    one, _ = tp_decode([40e9], [60], 1, gpu, fac, free, 7168)
    eight, _ = tp_decode([40e9], [60], 8, gpu, fac, free, 7168)
    lay = 60 * fac.layer_seconds("CUDA")
    # 8 GPUs of a TP group each read an eighth of the bytes (a layer split would read them in turn)
    assert 1 / one - lay == pytest.approx(40e9 / (1000e9 * 0.60), rel=1e-6)
    assert 1 / eight - lay == pytest.approx(40e9 / 8 / (1000e9 * 0.60), rel=1e-3)
    # each layer pays two all-reduces at the link's latency
    slow = Link("slow", 1e9, 50.0)
    eight_lat, bound = tp_decode([40e9], [60], 8, gpu, fac, slow, 7168)
    assert 1 / eight_lat - 1 / eight == pytest.approx(2 * 60 * 50e-6, rel=1e-2)


def test_vllm_plan_has_a_speed():
    sp = make_plan(PlanRequest(engine="vllm", device="h100", nodes=2, schemes=["FP8"])).scheme("FP8")
    assert sp.speed is not None and sp.speed.decode_tps > 0 and sp.speed.prefill_tps > 0


def test_routed_experts_prefill_at_the_backends_share():
    """A GPU's prefill computes the routed experts' FLOPs (the active share of their weights x 2 x the
    tokens) at the `experts` share of its dense rate, everything else at the dense rate."""
    import math

    from planner.core.llamacpp.speed import Factors

    hp, sp, kv = _r1()
    base = factors()
    pre = {k: dict(v) for k, v in base.prefill.items()}
    half = Factors(base.decode, {**pre, "CUDA": {**pre["CUDA"], "experts": 0.5}}, base.layer_us, base.links)
    whole = Factors(base.decode, {**pre, "CUDA": {**pre["CUDA"], "experts": 1.0}}, base.layer_us, base.links)
    fast_memory = Processor("GPU0", "CUDA", 1e7, 10.0)          # compute-bound: 10 TFLOPS, no memory limit
    opts = memory_options(PlanRequest(), kv)
    mem = plan_memory(hp, sp.tensors, [BIG], opts)
    a = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": fast_memory}, CPU, half, 512, 0)
    b = llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": fast_memory}, CPU, whole, 512, 0)
    exp_flops = sum(2.0 * math.prod(t.shape) * hp.n_expert_used / hp.n_expert for t in sp.tensors
                    if EXPS.search(t.name)) * 512
    rate = 10e12 * base.eff(base.prefill, "CUDA", "k")
    # at half the rate the experts take twice as long: the difference is their time at the full rate
    assert 512 / a.prefill_tps - 512 / b.prefill_tps == pytest.approx(exp_flops / rate, rel=1e-6)
    assert exp_flops / (2 * 512) > 15e9          # R1: ~17 B of its ~37 B active parameters are routed experts
    with pytest.raises(Exception, match="experts share"):
        bad = Factors(base.decode, {**pre, "CUDA": {**pre["CUDA"], "experts": 1.5}}, base.layer_us, base.links)
        llamacpp_speed(hp, sp.tensors, mem, opts, {"GPU0": fast_memory}, CPU, bad, 512, 0)
