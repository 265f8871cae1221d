"""Tiny random-weight models for the tests against the real llama.cpp (they are test data, not part of
the shipped package): DeepSeek-V3-, R1-Distill-Qwen- and R1-Distill-Llama-shaped Hparams small enough
that llama-quantize takes well under a second on 2 cores, and dimensions chosen to exercise llama.cpp's
block-size fallbacks (see planner/gguf/writer.py for writing them)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gguf import GGMLQuantizationType as T

from planner.core.catalog import Hparams
from planner.core.llamacpp.sizing import ResolvedModel
from planner.errors import PlannerError, choices
from planner.gguf.writer import model_from_hparams


TINY_KINDS = ("deepseek2-mla", "deepseek2-legacy", "qwen2", "qwen2-tied", "llama")


def tiny_deepseek2_hparams(**overrides: Any) -> Hparams:
    """A DeepSeek-V3-shaped deepseek2 (MLA + MoE, q LoRA, shared expert, routing bias), tiny: block 0
    dense, blocks 1-2 MoE with 4 experts (2 used). Any field can be overridden (n_layer=5 ...).

    Row lengths (ne0): n_embd, kv_lora, n_head*v_head and n_ff_exp are 256, so attn_kv_a_mqa,
    attn_v_b/attn_kv_b, attn_output and the expert tensors take K-quants as they are; qk_nope 128
    (attn_k_b, as in the real model) and n_ff 320 (the dense ffn_down) fall back to 32-element blocks;
    q_lora 80 (attn_q_b) is not a multiple of 32 either and falls back to f16.
    """
    hp = Hparams(
        arch="deepseek2", n_embd=256, n_vocab=384, n_layer=3, n_head=2, n_head_kv=2, n_ff=320,
        n_ctx_train=4096, n_lora_q=80, n_lora_kv=256, n_rot=64, n_embd_head_qk_nope=128,
        n_embd_head_v=128, n_expert=4, n_expert_used=2, n_expert_shared=1, n_ff_exp=256,
        n_layer_dense_lead=1, exp_probs_b=True,
    )
    return replace(hp, **overrides)


def tiny_qwen2_hparams(tied: bool = False, **overrides: Any) -> Hparams:
    """A qwen2 (R1-Distill-Qwen shape: q/k/v biases, GQA), tiny.

    Untied: n_embd 256 (K-quants fit), n_ff 384 (ffn_down falls back to 32-blocks), 4 layers.
    Tied: n_embd 320 (every n_embd row falls back), n_ff 432 (ffn_down: not a multiple of 32 -> f16),
    no output.weight (llama.cpp reuses token_embd), 3 layers.
    """
    if tied:
        hp = Hparams(arch="qwen2", n_embd=320, n_vocab=320, n_layer=3, n_head=5, n_head_kv=1, n_ff=432,
                     n_ctx_train=4096, tied_embeddings=True, n_embd_head=64, qkv_bias=True)
    else:
        hp = Hparams(arch="qwen2", n_embd=256, n_vocab=384, n_layer=4, n_head=4, n_head_kv=2, n_ff=384,
                     n_ctx_train=4096, n_embd_head=64, qkv_bias=True)
    return replace(hp, **overrides)


def tiny_llama_hparams(**overrides: Any) -> Hparams:
    """A llama (R1-Distill-Llama shape: GQA 4, Llama-3 rope_freqs tensor), tiny; every row fits K-quants."""
    hp = Hparams(arch="llama", n_embd=256, n_vocab=384, n_layer=4, n_head=4, n_head_kv=1, n_ff=512,
                 n_ctx_train=4096, n_embd_head=64, rope_freqs=True)
    return replace(hp, **overrides)


def tiny_hparams(kind: str) -> tuple[Hparams, str | None]:
    """(Hparams, layout) of a tiny model kind (see TINY_KINDS)."""
    if kind == "deepseek2-mla":
        return tiny_deepseek2_hparams(), "mla"
    if kind == "deepseek2-legacy":
        return tiny_deepseek2_hparams(), "legacy"
    if kind == "qwen2":
        return tiny_qwen2_hparams(), None
    if kind == "qwen2-tied":
        return tiny_qwen2_hparams(tied=True), None
    if kind == "llama":
        return tiny_llama_hparams(), None
    raise PlannerError(f"unknown tiny model kind '{kind}'; valid: {choices(TINY_KINDS)}")


def tiny_model(kind: str, src: T = T.BF16) -> ResolvedModel:
    """A tiny ResolvedModel of one of TINY_KINDS, weights in `src` (bf16, f16 or f32)."""
    hp, layout = tiny_hparams(kind)
    return model_from_hparams(hp, layout, src, id=f"tiny-{kind}")


def tiny_deepseek4_hparams(**overrides: Any) -> Hparams:
    """A DeepSeek-V4-shaped deepseek4, tiny: 5 layers with compress ratios 0, 4, 128, 4, 0 (window-only,
    CSA with the lightning indexer, HCA), a 32-token sliding window, hyper-connections of 4 streams, layer
    0 hash-routed (the i32 tid2eid table), 4 experts (2 used) + 1 shared, an indexer of 4 heads of 128
    (the real head size) and top-k 64.

    Row lengths (ne0): n_embd, the experts' n_ff_exp, the head size (256) and the compressors' apes
    are multiples of 256 (K-quants as they are); q_lora (attn_q_b, indexer.attn_q_b) and wo_b's
    o_groups*o_lora are 128, which K-quants fall back from (32-element blocks); the hyper-connection fn
    tensors have rows of 4*n_embd = 1024. The head size must differ from the indexer's: llama.cpp treats a
    KV cache whose head size equals indexer_head_size as the indexer's and, for the raw cache's empty
    non-window part, loops its Hadamard size to zero (SIGFPE) -- the real model (512 vs 128) never does.
    """
    hp = Hparams(
        arch="deepseek4", n_embd=256, n_vocab=384, n_layer=5, n_head=4, n_head_kv=1, n_ff=0,
        n_ctx_train=4096, n_embd_head=256, n_lora_q=128, n_rot=64, n_expert=4, n_expert_used=2,
        n_expert_shared=1, n_ff_exp=256, exp_probs_b=True, indexer_n_head=4, indexer_head_size=128,
        indexer_top_k=64, n_swa=32, compress_ratios=(0, 4, 128, 4, 0), n_out_groups=2, n_lora_o=64,
        n_hc=4, n_hash_layers=1,
    )
    return replace(hp, **overrides)
