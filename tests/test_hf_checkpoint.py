"""Exact Hugging Face checkpoint tensors for the vLLM/SGLang formats."""

import dataclasses
import math

import pytest

from planner.core.catalog import catalog
from planner.core.serving.hf_checkpoint import (
    checkpoint,
    formats,
    formats_for,
    hf_weights,
    resolve_format,
)
from planner.errors import PlannerError

GiB = 1 << 30


def ck(model, fmt):
    return checkpoint(catalog()[model], resolve_format(fmt))


def by_name(c):
    return {t.name: t for t in c.tensors()}


def test_r1_fp8_matches_the_official_release_to_the_byte():
    # deepseek-ai/DeepSeek-V3 header listing (github.com/simpx/model-inspect README):
    # 91,991 tensors, 688,574,839,360 bytes; R1 has the same architecture and the same layout.
    c = ck("deepseek-r1", "FP8")
    assert c.n_tensors == 91_991
    assert c.size_bytes == 688_574_839_360
    ts = c.tensors()
    assert len(ts) == c.n_tensors and sum(t.bytes for t in ts) == c.size_bytes
    t = by_name(c)
    # shapes and dtypes printed in that listing
    assert (t["model.layers.0.self_attn.q_a_proj.weight"].shape, t["model.layers.0.self_attn.q_a_proj.weight"].dtype) \
        == ((1536, 7168), "f8_e4m3")
    assert t["model.layers.0.self_attn.q_a_proj.weight_scale_inv"].shape == (12, 56)
    assert t["model.layers.0.self_attn.q_b_proj.weight_scale_inv"].shape == (192, 12)
    assert t["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"].shape == (5, 56)   # 576 -> 5 blocks
    assert t["model.layers.0.self_attn.kv_b_proj.weight_scale_inv"].shape == (256, 4)
    assert t["model.layers.0.self_attn.o_proj.weight_scale_inv"].shape == (56, 128)
    assert t["model.layers.0.mlp.down_proj.weight_scale_inv"].shape == (56, 144)
    assert t["model.layers.0.self_attn.q_a_layernorm.weight"].dtype == "bf16"
    # the MTP module (layer 61) is in the checkpoint, its eh_proj and head in bf16
    assert t["model.layers.61.eh_proj.weight"].shape == (7168, 14336)
    assert t["model.layers.61.eh_proj.weight"].dtype == "bf16"
    assert t["model.layers.61.shared_head.head.weight"].bytes == 1_853_358_080
    assert t["model.layers.61.mlp.experts.255.down_proj.weight"].dtype == "f8_e4m3"
    # router: gate bf16, correction bias float32
    assert t["model.layers.3.mlp.gate.weight"].dtype == "bf16"
    assert t["model.layers.3.mlp.gate.e_score_correction_bias"].dtype == "f32"
    assert "model.layers.2.mlp.gate.weight" not in t      # layers 0..2 are dense
    assert c.mtp_layers == 1


def test_r1_w4a16_and_awq_match_the_published_sizes():
    # IST-DASLab/MoE-Quant README: DeepSeek-R1-GPTQ-4b-128g-experts "346 GB" (GiB), all-layers "325 GB";
    # the ISTA card lists cognitivecomputations/DeepSeek-R1-AWQ at "340 GB".
    c = ck("deepseek-r1", "W4A16")
    assert c.size_bytes == 371_407_749_120      # 58 router biases of 256 experts kept float32 (+29,696 bytes)
    assert round(c.size_bytes / GiB) == 346
    all_linear = dataclasses.replace(resolve_format("W4A16"), moe_quantize="")
    assert round(checkpoint(catalog()["deepseek-r1"], all_linear).size_bytes / GiB) == 325
    awq = ck("deepseek-r1", "AWQ")
    assert awq.group_size == 64
    assert round(awq.size_bytes / GiB) == 340
    # neither carries the MTP layer
    assert c.mtp_layers == 0 and awq.mtp_layers == 0


def test_w4a16_on_moe_quantizes_only_routed_experts():
    t = by_name(ck("deepseek-r1", "W4A16"))
    assert t["model.layers.3.mlp.experts.0.gate_proj.weight_packed"].shape == (2048, 7168 // 8)
    assert t["model.layers.3.mlp.experts.0.gate_proj.weight_scale"].shape == (2048, 7168 // 128)
    assert t["model.layers.3.mlp.experts.0.gate_proj.weight_shape"].dtype == "i64"
    assert t["model.layers.3.mlp.shared_experts.gate_proj.weight"].dtype == "bf16"
    assert t["model.layers.3.self_attn.kv_b_proj.weight"].dtype == "bf16"
    assert "model.layers.3.mlp.experts.0.gate_proj.weight_zero_point" not in t     # symmetric


def test_distill_formats_follow_the_llm_compressor_recipes():
    hp = catalog()["deepseek-r1-distill-qwen-32b"].hparams
    H, ff, V, L = hp.n_embd, hp.n_ff, hp.n_vocab, hp.n_layer
    kv = hp.n_head_kv * hp.n_embd_head
    q = hp.n_head * hp.n_embd_head
    lin = [(q, H), (kv, H), (kv, H), (H, q), (ff, H), (ff, H), (H, ff)]
    bias16 = 2 * (q + 2 * kv)                         # q/k/v biases stay bf16
    norms16 = 2 * 2 * H
    head16 = 2 * 2 * V * H + 2 * H                    # embed + lm_head (ignored) + final norm

    fp8 = ck("deepseek-r1-distill-qwen-32b", "FP8-dynamic")
    per_layer = sum(o * i + 2 * o for o, i in lin) + bias16 + norms16      # e4m3 + bf16 [out, 1] scales
    assert fp8.size_bytes == L * per_layer + head16

    w4 = ck("deepseek-r1-distill-qwen-32b", "W4A16")
    per_layer = sum(o * math.ceil(i / 8) * 4 + o * math.ceil(i / 128) * 2 + 16 for o, i in lin) + bias16 + norms16
    assert w4.size_bytes == L * per_layer + head16

    awq = ck("deepseek-r1-distill-qwen-32b", "AWQ")
    per_layer = sum(i * o // 2 + (i // 128) * (o // 8) * 4 + (i // 128) * o * 2 for o, i in lin) + bias16 + norms16
    assert awq.size_bytes == L * per_layer + head16
    t = by_name(awq)
    assert t["model.layers.0.mlp.down_proj.qweight"].shape == (ff, H // 8)      # (in, out / 8)
    assert t["model.layers.0.mlp.down_proj.scales"].dtype == "f16"
    assert t["model.layers.0.self_attn.q_proj.bias"].dtype == "f16"

    w8 = by_name(ck("deepseek-r1-distill-qwen-32b", "W8A8"))
    assert w8["model.layers.0.self_attn.q_proj.weight"].dtype == "i8"
    assert w8["model.layers.0.self_attn.q_proj.weight_scale"].shape == (q, 1)
    assert not any(n.endswith("zero_point") for n in w8)
    assert w8["lm_head.weight"].dtype == "bf16" and w8["model.embed_tokens.weight"].dtype == "bf16"


def test_bf16_llama_70b_counts_every_parameter():
    e = catalog()["deepseek-r1-distill-llama-70b"]
    c = ck("deepseek-r1-distill-llama-70b", "BF16")
    hp = e.hparams
    assert c.params == sum(w.n_elements for w in hf_weights(hp))
    assert c.size_bytes == 2 * c.params == 141_107_412_992
    assert c.n_tensors == 2 + 1 + 9 * 80                # embed, lm_head, norm + 9 per layer


def test_fp8_exists_only_where_the_release_is_fp8():
    assert [f.id for f in formats_for(catalog()["deepseek-r1"])] == ["BF16", "FP8", "FP8-dynamic", "W8A8",
                                                                      "W4A16", "AWQ"]
    assert "FP8" not in [f.id for f in formats_for(catalog()["deepseek-r1-distill-qwen-7b"])]
    with pytest.raises(PlannerError, match="FP8-dynamic"):
        ck("deepseek-r1-distill-qwen-7b", "FP8")


def test_unknown_and_malformed_formats(tmp_path, monkeypatch):
    with pytest.raises(PlannerError, match="valid: BF16, FP8, FP8-dynamic, W8A8, W4A16, AWQ"):
        resolve_format("Q4_K_M")
    assert resolve_format("fp8-dynamic").id == "FP8-dynamic"
    (tmp_path / "formats").mkdir()
    (tmp_path / "formats" / "bad.toml").write_text('id = "X"\nname = "x"\nsource = "s"\nmethod = "nf4"\n'
                                                   'float_dtype = "bf16"\nquantize = "linear"\n')
    monkeypatch.setenv("DQ_PLANNER_PROFILES", str(tmp_path))
    formats.cache_clear()
    try:
        with pytest.raises(PlannerError, match="method 'nf4'"):
            formats()
    finally:
        monkeypatch.delenv("DQ_PLANNER_PROFILES")
        formats.cache_clear()
