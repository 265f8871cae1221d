"""Tiny Hugging Face checkpoints for the llm-compressor tests, generated here: random bf16 weights
written by transformers' save_pretrained and a byte-level BPE tokenizer trained on a few local lines
(nothing is downloaded).

- "qwen2": a dense Qwen2 (the R1-Distill-Qwen layout): hidden 256, 2 layers, GQA 4/2 heads, q/k/v biases,
  untied lm_head;
- "deepseek3": a DeepSeek-V3-shaped MoE: MLA (q_lora 128, kv_lora 128), layer 0 dense, layer 1 with
  4 routed experts (moe_intermediate 128) and a shared expert, noaux_tc router with its float32
  e_score_correction_bias, untied lm_head.

Dimensions are multiples of 128 where GPTQ's group of 128 spans a row (in_features 128, 256, 512).
"""

from __future__ import annotations

import json
from pathlib import Path

KINDS = ("qwen2", "deepseek3")

CALIBRATION_LINES = [f"sample {i}: the quick brown fox jumps over the lazy dog while {i} birds sing" for i in range(64)]


def _tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CALIBRATION_LINES, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="</s>").save_pretrained(out)


def write_checkpoint(kind: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, DeepseekV3Config, Qwen2Config

    torch.manual_seed(0)
    if kind == "qwen2":
        cfg = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=False)
    elif kind == "deepseek3":
        cfg = DeepseekV3Config(vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                               n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1,
                               topk_group=1, first_k_dense_replace=1, q_lora_rank=128, kv_lora_rank=128,
                               qk_rope_head_dim=32, qk_nope_head_dim=32, v_head_dim=32,
                               max_position_embeddings=512, tie_word_embeddings=False)
    else:
        raise ValueError(kind)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    if kind == "deepseek3":
        # DeepSeek-V3's own config.json names its router; transformers' does not write the key
        p = out / "config.json"
        doc = json.loads(p.read_text())
        doc["topk_method"] = "noaux_tc"
        p.write_text(json.dumps(doc, indent=2))
    _tokenizer(out)
    return out
