"""Memory model: exact KV bytes, llama.cpp placement, and the paper's per-GPU figures."""

import pytest

from planner.core.catalog import catalog
from planner.core.llamacpp.memory import MemoryOptions, layer_devices, padded_ctx
from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.errors import PlannerError


def kv(mode, **kw):
    p = make_plan(PlanRequest(device="h100", kv_mode=mode, schemes=["Q4_K_M"], **kw))
    return p.scheme("Q4_K_M").memory.kv_cache_bytes


def test_kv_cache_bytes_exact_in_every_era():
    assert kv("mla") == 2_302_672_896
    assert kv("mla-kv") == 4_349_493_248
    assert kv("legacy") == 163_745_628_160


def test_kv_cache_quantized_types_and_padding():
    # q8_0: 576 elements -> 18 blocks of 34 bytes per token and layer; 30000 pads to 30208 cells
    assert kv("mla", cache_type_k="q8_0", cache_type_v="q8_0", ctx=30000) == 18 * 34 * 30208 * 61


def test_mla_cache_refuses_different_k_and_v_types():
    with pytest.raises(PlannerError, match="one cache type for K and V"):
        kv("mla", cache_type_k="q8_0")


def test_quantized_v_cache_needs_flash_attention():
    with pytest.raises(PlannerError, match="flash attention"):
        kv("mla-kv", cache_type_v="q8_0", flash_attn="off")


def test_dense_gqa_kv():
    p = make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="h100", schemes=["Q4_K_M"], ctx=32768))
    # 64 layers x (K + V) x 8 kv heads x 128 x f16
    assert p.scheme("Q4_K_M").memory.kv_cache_bytes == 64 * 2 * 8 * 128 * 2 * 32768
    assert p.kv_mode is None


def test_padded_ctx_parallel():
    assert padded_ctx(32768, 1) == (32768, 32768)
    assert padded_ctx(1000, 1) == (1024, 1024)
    assert padded_ctx(32768, 3) == (3 * 11008, 11008)


def test_layer_devices_even_split_matches_llama_cpp():
    # 61 layers + output over 8 equal devices: layer il -> upper_bound(splits, il/62)
    devs = layer_devices(61, 8, [1.0] * 8, None)
    assert devs[:8] == [0] * 8 and devs[-1] == 7
    assert [devs.count(i) for i in range(8)] == [8, 8, 8, 7, 8, 8, 8, 7]


def test_layer_devices_ngl_keeps_first_layers_on_host():
    devs = layer_devices(61, 8, [1.0] * 8, 10)
    assert devs[:52] == [-1] * 52 and all(d >= 0 for d in devs[52:])


@pytest.mark.parametrize("scheme,table1_gb", [
    ("Q4_K_M", 71), ("Q3_K_M", 61), ("DQ3_K_M", 59), ("Q2_K_L", 52), ("UD-Q2_K_XL", 50)])
def test_paper_setup_mean_per_gpu_within_2_gb(scheme, table1_gb):
    p = make_plan(PlanRequest(device="h100", kv_mode="legacy", schemes=[scheme]))
    m = p.scheme(scheme).memory
    mean = sum(d.total_bytes for d in m.per_device) / len(m.per_device)
    assert abs(mean / 1e9 - table1_gb) <= 2.0
    # what it is made of: weights + legacy KV dominate
    assert sum(d.weights_bytes for d in m.per_device) + m.host.weights_bytes == p.scheme(scheme).size_bytes
    assert sum(d.kv_bytes for d in m.per_device) == 163_745_628_160


def test_token_embd_on_host_and_output_on_last_device():
    p = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"]))
    m = p.scheme("Q4_K_M").memory
    te = next(t for t in p.scheme("Q4_K_M").tensors if t.name == "token_embd.weight")
    assert m.host.weights_bytes == te.bytes
    assert 61 in m.per_device[-1].layers


def test_n_cpu_moe_moves_experts_to_host():
    base = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"])).scheme("Q4_K_M")
    moe = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], n_cpu_moe=10)).scheme("Q4_K_M")
    moved = sum(t.bytes for t in base.tensors
                if t.name.split(".")[1].isdigit() and int(t.name.split(".")[1]) < 10 and "_exps." in t.name)
    assert moved > 0
    assert moe.memory.host.weights_bytes - base.memory.host.weights_bytes == moved


def test_tensor_split_count_must_match():
    with pytest.raises(PlannerError, match="--tensor-split has 3 values for 8 devices"):
        make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], tensor_split=[1, 1, 1]))


def test_uneven_tensor_split_moves_layers():
    p = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M"], tensor_split=[3, 1, 1, 1, 1, 1, 1, 1]))
    layers = [len(d.layers) for d in p.scheme("Q4_K_M").memory.per_device]
    assert layers[0] > 2 * layers[1]
    assert sum(layers) == 62


def test_rpc_devices_come_first():
    p = make_plan(PlanRequest(device="h100", gpus=2, schemes=["Q4_K_M"],
                              rpc=["127.0.0.1:50052=24G", "127.0.0.1:50053"]))
    labels = [d.device for d in p.scheme("Q4_K_M").memory.per_device]
    assert labels == ["RPC[127.0.0.1:50052]", "RPC[127.0.0.1:50053]", "CUDA0", "CUDA1"]
    assert p.scheme("Q4_K_M").memory.per_device[0].capacity_bytes == 24 << 30


def test_max_context_is_the_fitting_boundary():
    req = dict(device="h100", kv_mode="legacy", schemes=["DQ3_K_M"])
    best = make_plan(PlanRequest(max_context=True, **req)).scheme("DQ3_K_M").memory.max_context
    assert best % 256 == 0 and 32768 < best < 163840
    assert make_plan(PlanRequest(ctx=best, **req)).scheme("DQ3_K_M").fits is True
    assert make_plan(PlanRequest(ctx=best + 256, **req)).scheme("DQ3_K_M").fits is False


def test_fewest_devices():
    p = make_plan(PlanRequest(device="h100", schemes=["Q4_K_M", "UD-Q2_K_XL"]))
    q4 = p.scheme("Q4_K_M").memory.fewest_devices
    ud = p.scheme("UD-Q2_K_XL").memory.fewest_devices
    assert ud < q4 <= 8
    fewer = make_plan(PlanRequest(device="h100", gpus=q4 - 1, schemes=["Q4_K_M"])).scheme("Q4_K_M")
    assert fewer.fits is False
    p16 = make_plan(PlanRequest(device="h100", schemes=["F16"])).scheme("F16")
    assert p16.fits is False and p16.memory.fewest_devices is None


def test_rpc_memory_sizes():
    from planner.core.devices.hardware import parse_rpc

    assert parse_rpc("10.0.0.2:50052=24") == ("10.0.0.2:50052", 24 << 30)
    assert parse_rpc("10.0.0.2:50052=24GB") == ("10.0.0.2:50052", 24 * 10**9)
    assert parse_rpc("h:1=81559MiB") == ("h:1", 81559 << 20)
    assert parse_rpc("h:1") == ("h:1", None)
    for bad in ("h:1=0", "h:1=lots", "h=1", "h:99999"):
        with pytest.raises(PlannerError):
            parse_rpc(bad)
