"""vLLM / SGLang memory per GPU: sharding, KV cache, and the configurations known to work (or not)."""

import json

import pytest

from planner.core.catalog import catalog
from planner.core.serving.memory import (
    Layout,
    check_tp,
    kv_values_per_token_layer,
    pp_layer_counts,
    shard_shape,
    stage_weight_bytes,
)
from planner.core.serving.hf_checkpoint import layer_weights, model_weights, resolve_format
from planner.core.plan import PlanRequest
from planner.engines.sglang import memory as sglang
from planner.engines.vllm import memory as vllm
from planner.core.serving.plan_formats import EngineOptions
from planner.engines.registry import engine
from planner.errors import PlannerError
from planner.core.devices.profiles import resolve_device

R1 = "deepseek-r1"
GiB = 1 << 30


def fits(engine_id, model, fmt, device, gpus, nodes=1, ctx=32768, **opts):
    req = PlanRequest(model=model, engine=engine_id, schemes=[fmt], ctx=ctx)
    sp = engine(engine_id).plan_schemes(req, catalog()[model], resolve_device(device), gpus, nodes,
                                        options=EngineOptions(**opts) if opts else None)[0]
    return sp


# ---- the configurations the issue names -------------------------------------------------------

@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_r1_fp8_needs_h200_or_two_h100_nodes(engine):
    assert fits(engine, R1, "FP8", "h100", 8).fits is False
    assert fits(engine, R1, "FP8", "h200", 8).fits is True
    two = fits(engine, R1, "FP8", "h100", 8, nodes=2)
    assert two.fits is True
    assert len(two.memory.per_device) == 16 and two.memory.per_device[8].device == "node1/CUDA0"
    assert two.memory.fewest_devices == 16


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_r1_w4a16_fits_one_h100_node(engine):
    sp = fits(engine, R1, "W4A16", "h100", 8)
    assert sp.fits is True
    assert sp.memory.fewest_devices == 8       # TP 4 (the next divisor of 128 heads) holds 89 GB per GPU


def test_llama_70b_w4a16_on_one_a100_bf16_on_two():
    # the model cards' GPU counts (single-stream chat workloads, short contexts)
    m = "deepseek-r1-distill-llama-70b"
    assert fits("vllm", m, "W4A16", "a100", 1, ctx=8192).fits is True
    assert fits("vllm", m, "BF16", "a100", 1, ctx=8192).fits is False
    two = fits("vllm", m, "BF16", "a100", 2, ctx=8192)
    assert two.fits is True and two.memory.fewest_devices == 2
    assert fits("sglang", m, "BF16", "a100", 2, ctx=8192).fits is True


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_qwen_32b_fp8_dynamic_fits_one_h100(engine):
    assert fits(engine, "deepseek-r1-distill-qwen-32b", "FP8-dynamic", "h100", 1).fits is True


# ---- sharding ---------------------------------------------------------------------------------

def test_pipeline_stages_split_layers_like_vllm():
    assert pp_layer_counts(61, 2) == [31, 30]
    assert pp_layer_counts(80, 3) == [27, 27, 26]
    assert pp_layer_counts(64, 4) == [16, 16, 16, 16]
    with pytest.raises(PlannerError):
        pp_layer_counts(61, 62)


def test_what_each_rank_holds():
    hp = catalog()[R1].hparams
    ws = {w.name.split(".", 3)[-1]: w for w in layer_weights(hp, 5)}
    assert shard_shape(ws["self_attn.q_a_proj.weight"], hp, 8) == (1536, 7168)           # replicated
    assert shard_shape(ws["self_attn.kv_a_proj_with_mqa.weight"], hp, 8) == (576, 7168)   # replicated
    assert shard_shape(ws["self_attn.q_b_proj.weight"], hp, 8) == (3072, 1536)
    assert shard_shape(ws["self_attn.o_proj.weight"], hp, 8) == (7168, 2048)
    assert shard_shape(ws["mlp.experts.0.down_proj.weight"], hp, 16) == (7168, 128)
    assert shard_shape(ws["mlp.gate.weight"], hp, 8) == (256, 7168)
    embed = model_weights(hp)[0][0]
    assert shard_shape(embed, hp, 8) == (129280 // 8, 7168)
    llama = catalog()["deepseek-r1-distill-llama-70b"].hparams
    k = [w for w in layer_weights(llama, 0) if w.name.endswith("k_proj.weight")][0]
    assert shard_shape(k, llama, 2) == (4 * 128, 8192)
    assert shard_shape(k, llama, 16) == (128, 8192)       # 8 KV heads over 16 ranks: one head each, replicated


def test_mla_cache_is_not_split_by_tensor_parallelism():
    hp = catalog()[R1].hparams
    assert kv_values_per_token_layer(hp, 1) == kv_values_per_token_layer(hp, 16) == 512 + 64
    qwen = catalog()["deepseek-r1-distill-qwen-32b"].hparams
    assert kv_values_per_token_layer(qwen, 1) == 2 * 8 * 128
    assert kv_values_per_token_layer(qwen, 4) == 2 * 2 * 128
    # one sequence of 32768 tokens: every GPU of an 8-way R1 plan holds the whole 61-layer latent cache
    sp = fits("vllm", R1, "W4A16", "h100", 8)
    assert {d.kv_bytes for d in sp.memory.per_device} == {61 * 576 * 2 * 32768}
    # PP halves it: 31 and 30 layers
    sp = fits("vllm", R1, "FP8", "h100", 8, nodes=2)
    assert sp.memory.per_device[0].kv_bytes == 31 * 576 * 2 * 32768
    assert sp.memory.per_device[8].kv_bytes == 30 * 576 * 2 * 32768
    assert sp.memory.per_device[0].layers == list(range(31))


def test_stage_weights_add_up_to_the_loaded_model():
    # TP 1 x PP 1: the rank holds the whole checkpoint minus the MTP module the engines skip
    e = catalog()["deepseek-r1-distill-qwen-32b"]
    from planner.core.serving.hf_checkpoint import checkpoint
    fmt = resolve_format("W4A16")
    assert stage_weight_bytes(e.hparams, fmt, e.id, Layout(tp=1)) == [checkpoint(e, fmt).size_bytes]
    # TP 2: replicated norms, split everything else
    two = stage_weight_bytes(e.hparams, fmt, e.id, Layout(tp=2))[0]
    assert checkpoint(e, fmt).size_bytes / 2 < two < checkpoint(e, fmt).size_bytes / 2 * 1.002


def test_tp_must_divide_heads_and_fp8_blocks():
    with pytest.raises(PlannerError, match=r"40 attention heads; valid: 1, 2, 4, 8"):
        check_tp(catalog()["deepseek-r1-distill-qwen-32b"].hparams, 16)
    # SGLang over 4 nodes: TP 32 would cut the experts' FP8 scale blocks (2048 / 32 = 64): TP 16, 4 GPUs a node
    sp = fits("sglang", R1, "FP8", "h100", 8, nodes=4)
    assert len(sp.memory.per_device) == 16 and sp.memory.per_device[4].device == "node1/CUDA0"
    assert any("TP 16 uses 4 of the 8 GPUs per node" in n and "scale blocks" in n for n in sp.memory.notes)
    # Qwen-7B's 28 heads on 8 GPUs: TP 4; Qwen-14B W4A16 on 8: TP 4, as 13824 / 8 would cut 128-wide groups
    sp = fits("vllm", "deepseek-r1-distill-qwen-7b", "BF16", "h100", 8)
    assert len(sp.memory.per_device) == 4 and sp.memory.fewest_devices == 1
    sp = fits("vllm", "deepseek-r1-distill-qwen-14b", "W4A16", "h100", 8)
    assert len(sp.memory.per_device) == 4 and any("quantization groups" in n for n in sp.memory.notes)


def test_kv_fp8_halves_the_cache_and_raises_concurrency():
    base = fits("vllm", R1, "FP8", "h200", 8)
    fp8 = fits("vllm", R1, "FP8", "h200", 8, kv_cache_dtype="fp8")
    assert fp8.memory.kv_cache_bytes * 2 == base.memory.kv_cache_bytes
    req = PlanRequest(model=R1, engine="vllm", schemes=["FP8"], cache_type_k="fp8")
    assert engine(req.engine).plan_schemes(req, catalog()[R1], resolve_device("h200"), 8, 1)[0].memory.kv_cache_bytes \
        == fp8.memory.kv_cache_bytes
    with pytest.raises(PlannerError, match="valid: f16, bf16, fp8"):
        engine("vllm").plan_schemes(PlanRequest(model=R1, engine="vllm", cache_type_k="q4_0"), catalog()[R1],
                    resolve_device("h200"), 8, 1)


def test_vllm_budget_is_gpu_memory_utilization():
    sp = fits("vllm", R1, "FP8", "h200", 8)
    d = sp.memory.per_device[0]
    total = resolve_device("h200").memory_bytes
    assert d.capacity_bytes == total
    assert d.overhead_bytes == total - int(0.9 * total)
    lower = fits("vllm", R1, "FP8", "h200", 8, gpu_memory_utilization=0.8)
    assert lower.headroom_bytes < sp.headroom_bytes - 14 * GiB


def test_sglang_dp_attention_trades_weights_for_kv_capacity():
    e = catalog()[R1]
    prof = resolve_device("h200")
    opts = EngineOptions()
    plain, _ = sglang.fit(e, resolve_format("FP8"), prof, 8, 1, 32768, opts)
    dp, devs = sglang.fit(e, resolve_format("FP8"), prof, 8, 1, 32768, EngineOptions(dp_attention=True))
    # attention, embedding and lm_head whole on every rank: ~10 GiB more weights per GPU for R1
    extra = dp.ranks[0].weights_bytes - plain.ranks[0].weights_bytes
    assert 9 * GiB < extra < 13 * GiB
    # but each rank's pool serves only its own requests: far more sequences in all
    assert dp.max_sequences > 3 * plain.max_sequences
    assert dp.layout.describe() == "TP 8, DP attention 8"
    with pytest.raises(PlannerError, match="DeepSeek"):
        sglang.fit(catalog()["deepseek-r1-distill-qwen-32b"], resolve_format("W8A8"), prof, 2, 1, 32768,
                   EngineOptions(dp_attention=True))


def test_sglang_memory_fraction_defaults_by_tp():
    assert [sglang.default_mem_fraction(t) for t in (1, 2, 4, 8, 16)] == [0.88, 0.87, 0.85, 0.81, 0.79]
    assert vllm.max_num_batched_tokens("h100") == 8192 and vllm.max_num_batched_tokens("a100") == 2048


def test_plan_json_and_max_context():
    req = PlanRequest(model="deepseek-r1-distill-llama-70b", engine="vllm", schemes=["W4A16"], ctx=8192,
                      max_context=True, with_tensors=True)
    sp = engine(req.engine).plan_schemes(req, catalog()[req.model], resolve_device("a100"), 1, 1)[0]
    d = json.loads(json.dumps(sp.to_dict(with_tensors=True)))
    assert d["kind"] == "vllm" and d["fits"] is True
    # one A100 holds W4A16 weights plus ~110k tokens of KV (the model's 131072 would not fit)
    mc = d["memory"]["max_context"]
    assert d["type_bytes"]["i32"] > 0 and 100_000 < mc < 131072 and mc % 16 == 0
    t = {x["name"]: x for x in d["tensors"]}
    # ggml order in the plan: row length first
    assert t["model.layers.0.mlp.down_proj.weight_packed"]["shape"] == [28672 // 8, 8192]
    assert any("RedHatAI/DeepSeek-R1-Distill-Llama-70B-quantized.w4a16" in n for n in d["notes"])


def test_a_format_that_cannot_be_sharded_stays_listed_unplaced():
    # DeepSeek-V2-Lite experts are 1408 wide: over 2 SGLang nodes TP must be even, and 1408 / 2 = 704 cuts
    # W4A16's 128-wide groups, so W4A16 is not placed while the other formats are
    req = PlanRequest(model="deepseek-v2-lite", engine="sglang")
    sps = {sp.id: sp for sp in engine(req.engine).plan_schemes(req, catalog()[req.model], resolve_device("h100"), 8, 2)}
    assert sps["W4A16"].memory is None and sps["W4A16"].fits is None
    assert "quantization groups" in sps["W4A16"].notes[0]
    assert sps["BF16"].fits is True
    with pytest.raises(PlannerError, match="quantization groups"):
        engine("sglang").plan_schemes(PlanRequest(model="deepseek-v2-lite", engine="sglang", schemes=["W4A16"]),
                    catalog()["deepseek-v2-lite"], resolve_device("h100"), 8, 2)
