"""Exact tensors and bytes of a Hugging Face checkpoint in the formats vLLM and SGLang serve.

The logical weights come from the catalog's Hparams (the Hugging Face names: model.layers.N.self_attn.
q_a_proj.weight ...); a format (profiles/formats/*.toml) decides which of them are quantized and how
each quantized linear is stored (weight, scales, zero points), everything else staying in 16 bits.
Shapes here are PyTorch's ([out_features, in_features] for a linear layer), as safetensors headers
record them; `TensorPlan`s made from them are reversed into ggml order (row length first) to keep the
plan's one convention. Type names are the safetensors dtypes in lower case (bf16, f16, f32, f8_e4m3,
i8, i32, i64).

Each weight also records how vLLM and SGLang shard it under tensor parallelism ("split"):
- col: output features divided by TP (ColumnParallelLinear, MergedColumnParallelLinear);
- row: input features divided by TP (RowParallelLinear);
- kv: the k/v projections of grouped-query attention: max(1, n_kv_heads / TP) heads per rank
  (QKVParallelLinear replicates KV heads when TP exceeds their number);
- vocab: VocabParallelEmbedding / ParallelLMHead rows, the vocabulary padded to a multiple of 64;
- rep: replicated on every rank (norms, MoE router gate and bias, and the MLA down-projections
  q_a_proj and kv_a_proj_with_mqa, which vLLM's and SGLang's DeepseekV2 models build as
  ReplicatedLinear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from planner.core.catalog import Hparams, ModelEntry
from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.errors import PlannerError, choices

DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f8_e4m3": 1, "i8": 1, "i32": 4, "i64": 8}
METHODS = ("none", "fp8_block", "channel", "group", "awq")
SELECTORS = ("none", "linear", "routed_experts")
VOCAB_PADDING = 64          # vLLM/SGLang DEFAULT_VOCAB_PADDING_SIZE


@dataclass(frozen=True)
class HFWeight:
    """One logical (unquantized) parameter of the checkpoint."""

    name: str
    shape: tuple[int, ...]        # PyTorch order
    role: str                     # embed | lm_head | norm | router | router_bias | bias | linear | mtp_linear
    split: str                    # col | row | kv | vocab | rep
    layer: int | None = None      # decoder layer; the MTP module is layer n_layer
    group: str = ""               # attn | mlp | routed | shared | mtp | ""

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def prefix(self) -> str:
        return self.name[: -len(".weight")] if self.name.endswith(".weight") else self.name


@dataclass(frozen=True)
class CkptTensor:
    name: str
    shape: tuple[int, ...]        # PyTorch order
    dtype: str

    @property
    def bytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


# ---------------------------------------------------------------------------------------------
# logical weights


def mtp_layers(entry: ModelEntry) -> int:
    """Multi-token-prediction modules the model's config declares (V3 family: 1, as layer 61)."""
    return int((entry.config or {}).get("num_nextn_predict_layers") or 0)


def _layer(hp: Hparams, i: int) -> list[HFWeight]:
    b = f"model.layers.{i}."
    H = hp.n_embd
    out: list[HFWeight] = []

    def w(name: str, shape: tuple[int, ...], role: str, split: str, group: str) -> None:
        out.append(HFWeight(b + name, shape, role, split, i, group))

    w("input_layernorm.weight", (H,), "norm", "rep", "")
    if hp.arch == "deepseek2":
        nh = hp.n_head
        qk = hp.n_embd_head_qk_nope + hp.n_rot
        if hp.n_lora_q:
            w("self_attn.q_a_proj.weight", (hp.n_lora_q, H), "linear", "rep", "attn")
            w("self_attn.q_a_layernorm.weight", (hp.n_lora_q,), "norm", "rep", "attn")
            w("self_attn.q_b_proj.weight", (nh * qk, hp.n_lora_q), "linear", "col", "attn")
        else:
            w("self_attn.q_proj.weight", (nh * qk, H), "linear", "col", "attn")
        w("self_attn.kv_a_proj_with_mqa.weight", (hp.n_lora_kv + hp.n_rot, H), "linear", "rep", "attn")
        w("self_attn.kv_a_layernorm.weight", (hp.n_lora_kv,), "norm", "rep", "attn")
        w("self_attn.kv_b_proj.weight", (nh * (hp.n_embd_head_qk_nope + hp.n_embd_head_v), hp.n_lora_kv),
          "linear", "col", "attn")
        w("self_attn.o_proj.weight", (H, nh * hp.n_embd_head_v), "linear", "row", "attn")
    else:
        hd = hp.n_embd_head
        q, kv = hp.n_head * hd, hp.n_head_kv * hd
        w("self_attn.q_proj.weight", (q, H), "linear", "col", "attn")
        if hp.qkv_bias:
            w("self_attn.q_proj.bias", (q,), "bias", "col", "attn")
        w("self_attn.k_proj.weight", (kv, H), "linear", "kv", "attn")
        if hp.qkv_bias:
            w("self_attn.k_proj.bias", (kv,), "bias", "kv", "attn")
        w("self_attn.v_proj.weight", (kv, H), "linear", "kv", "attn")
        if hp.qkv_bias:
            w("self_attn.v_proj.bias", (kv,), "bias", "kv", "attn")
        w("self_attn.o_proj.weight", (H, q), "linear", "row", "attn")
    w("post_attention_layernorm.weight", (H,), "norm", "rep", "")
    moe = hp.arch == "deepseek2" and hp.is_moe and i >= hp.n_layer_dense_lead
    if not moe:
        w("mlp.gate_proj.weight", (hp.n_ff, H), "linear", "col", "mlp")
        w("mlp.up_proj.weight", (hp.n_ff, H), "linear", "col", "mlp")
        w("mlp.down_proj.weight", (H, hp.n_ff), "linear", "row", "mlp")
        return out
    w("mlp.gate.weight", (hp.n_expert, H), "router", "rep", "mlp")
    if hp.exp_probs_b:
        w("mlp.gate.e_score_correction_bias", (hp.n_expert,), "router_bias", "rep", "mlp")
    f = hp.n_ff_exp
    for e in range(hp.n_expert):
        p = f"mlp.experts.{e}."
        w(p + "gate_proj.weight", (f, H), "linear", "col", "routed")
        w(p + "up_proj.weight", (f, H), "linear", "col", "routed")
        w(p + "down_proj.weight", (H, f), "linear", "row", "routed")
    if hp.n_expert_shared:
        s = f * hp.n_expert_shared
        w("mlp.shared_experts.gate_proj.weight", (s, H), "linear", "col", "shared")
        w("mlp.shared_experts.up_proj.weight", (s, H), "linear", "col", "shared")
        w("mlp.shared_experts.down_proj.weight", (H, s), "linear", "row", "shared")
    return out


def _mtp_extras(hp: Hparams, i: int) -> list[HFWeight]:
    """The MTP module's own tensors next to its decoder layer (README_WEIGHTS.md of DeepSeek-V3)."""
    b = f"model.layers.{i}."
    H, V = hp.n_embd, hp.n_vocab
    return [
        HFWeight(b + "embed_tokens.weight", (V, H), "embed", "vocab", i, "mtp"),
        HFWeight(b + "enorm.weight", (H,), "norm", "rep", i, "mtp"),
        HFWeight(b + "hnorm.weight", (H,), "norm", "rep", i, "mtp"),
        HFWeight(b + "eh_proj.weight", (H, 2 * H), "mtp_linear", "rep", i, "mtp"),
        HFWeight(b + "shared_head.norm.weight", (H,), "norm", "rep", i, "mtp"),
        HFWeight(b + "shared_head.head.weight", (V, H), "lm_head", "vocab", i, "mtp"),
    ]


def model_weights(hp: Hparams) -> tuple[list[HFWeight], list[HFWeight]]:
    """(first-stage weights: the embedding; last-stage weights: final norm and lm_head)."""
    H, V = hp.n_embd, hp.n_vocab
    first = [HFWeight("model.embed_tokens.weight", (V, H), "embed", "vocab")]
    last = [HFWeight("model.norm.weight", (H,), "norm", "rep")]
    if not hp.tied_embeddings:
        last.append(HFWeight("lm_head.weight", (V, H), "lm_head", "vocab"))
    return first, last


def layer_weights(hp: Hparams, i: int) -> list[HFWeight]:
    """Decoder layer i; i == n_layer .. n_layer + mtp - 1 are MTP modules (layer plus extras)."""
    ws = _layer(hp, i)
    if i >= hp.n_layer:
        ws += _mtp_extras(hp, i)
    return ws


def hf_weights(hp: Hparams, n_mtp: int = 0) -> list[HFWeight]:
    """Every logical parameter, in the order the checkpoint index lists them by layer."""
    first, last = model_weights(hp)
    out = list(first)
    for i in range(hp.n_layer + n_mtp):
        out += layer_weights(hp, i)
    return out + last


# ---------------------------------------------------------------------------------------------
# formats


@dataclass(frozen=True)
class Format:
    id: str
    name: str
    source: str
    method: str
    float_dtype: str
    quantize: str
    weight_dtype: str = ""
    scale_dtype: str = ""
    block: tuple[int, int] = (128, 128)
    group_size: int = 128
    symmetric: bool = True
    moe_quantize: str = ""
    mtp_in_checkpoint: bool = False
    requires_quant_method: str = ""
    keep_f32: tuple[str, ...] = ()
    repos: dict = field(default_factory=dict, compare=False, hash=False)
    group_size_by_model: dict = field(default_factory=dict, compare=False, hash=False)
    recipe: dict = field(default_factory=dict, compare=False, hash=False)   # llm-compressor's, where it makes this format
    path: str = ""

    def selector(self, hp: Hparams) -> str:
        if hp.arch == "deepseek2" and hp.is_moe and self.moe_quantize:
            return self.moe_quantize
        return self.quantize

    def group_for(self, model_id: str) -> int:
        return int(self.group_size_by_model.get(model_id, self.group_size))

    def check_applies(self, entry: ModelEntry) -> None:
        if self.requires_quant_method:
            qm = ((entry.config or {}).get("quantization_config") or {}).get("quant_method")
            if qm != self.requires_quant_method:
                raise PlannerError(
                    f"format {self.id} is the model's own {self.requires_quant_method.upper()} release, which "
                    f"{entry.id} does not have; use one of BF16, FP8-dynamic, W8A8, W4A16, AWQ")


def _load_format(path: Path) -> Format:
    where = f"format {path}"
    d = read_toml(path, "format")
    for k in ("id", "name", "source", "method", "float_dtype", "quantize"):
        if k not in d:
            raise PlannerError(f"{where}: missing '{k}'")
    if d["method"] not in METHODS:
        raise PlannerError(f"{where}: method '{d['method']}' is not one of {', '.join(METHODS)}")
    for k in ("quantize", "moe_quantize"):
        if k in d and d[k] not in SELECTORS:
            raise PlannerError(f"{where}: {k} '{d[k]}' is not one of {', '.join(SELECTORS)}")
    for k in ("float_dtype", "weight_dtype", "scale_dtype"):
        if d.get(k) and d[k] not in DTYPE_BYTES:
            raise PlannerError(f"{where}: {k} '{d[k]}' is not one of {choices(DTYPE_BYTES)}")
    if d["method"] != "none" and not (d.get("weight_dtype") and d.get("scale_dtype")):
        raise PlannerError(f"{where}: a quantized format needs weight_dtype and scale_dtype")
    gs = d.get("group_size", 128)
    if not isinstance(gs, int) or gs < 1:
        raise PlannerError(f"{where}: group_size must be a positive integer")
    return Format(
        id=d["id"], name=d["name"], source=d["source"], method=d["method"], float_dtype=d["float_dtype"],
        quantize=d["quantize"], weight_dtype=d.get("weight_dtype", ""), scale_dtype=d.get("scale_dtype", ""),
        block=tuple(d.get("block", (128, 128))), group_size=gs, symmetric=bool(d.get("symmetric", True)),
        moe_quantize=d.get("moe_quantize", ""), mtp_in_checkpoint=bool(d.get("mtp_in_checkpoint", False)),
        requires_quant_method=d.get("requires_quant_method", ""), keep_f32=tuple(d.get("keep_f32", ())),
        repos=dict(d.get("repos", {})), group_size_by_model=dict(d.get("group_size_by_model", {})),
        recipe=dict(d.get("recipe", {})), path=str(path))


@lru_cache(maxsize=1)
def formats() -> dict[str, Format]:
    """Every format of profiles/formats, by id, in the interface's order."""
    out: dict[str, Format] = {}
    for p in sorted((profiles_dir() / "formats").glob("*.toml")):
        f = _load_format(p)
        out[f.id] = f
    order = ["BF16", "FP8", "FP8-dynamic", "W8A8", "W4A16", "AWQ"]
    return {k: out[k] for k in sorted(out, key=lambda k: (order.index(k) if k in order else 99, k))}


def resolve_format(fid: str) -> Format:
    fs = formats()
    if fid in fs:
        return fs[fid]
    low = {k.lower(): k for k in fs}
    if fid.lower() in low:
        return fs[low[fid.lower()]]
    raise PlannerError(f"unknown vLLM/SGLang format '{fid}'; valid: {', '.join(fs)}")


def formats_for(entry: ModelEntry) -> list[Format]:
    """The formats that exist for a model (FP8 only where the release itself is FP8)."""
    out = []
    for f in formats().values():
        try:
            f.check_applies(entry)
        except PlannerError:
            continue
        out.append(f)
    return out


# ---------------------------------------------------------------------------------------------
# stored tensors


def is_quantized(w: HFWeight, selector: str) -> bool:
    if w.role != "linear" or selector == "none":
        return False
    return selector == "linear" or (selector == "routed_experts" and w.group == "routed")


def stored(w: HFWeight, fmt: Format, selector: str, group: int, shape: tuple[int, ...] | None = None) -> list[CkptTensor]:
    """The tensors one logical weight is stored as (optionally for a shard's shape)."""
    shape = shape or w.shape
    if not is_quantized(w, selector):
        last = w.name.rsplit(".", 1)[-1]
        dt = "f32" if last in fmt.keep_f32 else fmt.float_dtype
        return [CkptTensor(w.name, shape, dt)]
    o, i = shape
    p = w.prefix
    m = fmt.method
    if m == "fp8_block":
        b0, b1 = fmt.block
        return [CkptTensor(p + ".weight", (o, i), fmt.weight_dtype),
                CkptTensor(p + ".weight_scale_inv", (math.ceil(o / b0), math.ceil(i / b1)), fmt.scale_dtype)]
    if m == "channel":
        return [CkptTensor(p + ".weight", (o, i), fmt.weight_dtype),
                CkptTensor(p + ".weight_scale", (o, 1), fmt.scale_dtype)]
    if m == "group":
        out = [CkptTensor(p + ".weight_packed", (o, math.ceil(i / 8)), "i32"),
               CkptTensor(p + ".weight_scale", (o, math.ceil(i / group)), fmt.scale_dtype),
               CkptTensor(p + ".weight_shape", (2,), "i64")]
        if not fmt.symmetric:
            out.append(CkptTensor(p + ".weight_zero_point", (math.ceil(o / 8), math.ceil(i / group)), "i32"))
        return out
    if m == "awq":
        # WQLinear_GEMM stores the transposed layout: (in, out / 8)
        if o % 8:
            raise PlannerError(f"{w.name}: AWQ packs 8 output features per int32; {o} is not a multiple of 8")
        g = math.ceil(i / group)
        return [CkptTensor(p + ".qweight", (i, o // 8), "i32"),
                CkptTensor(p + ".qzeros", (g, o // 8), "i32"),
                CkptTensor(p + ".scales", (g, o), fmt.scale_dtype)]
    raise PlannerError(f"format {fmt.id}: unknown method {m}")


@dataclass
class Checkpoint:
    """A model's checkpoint in one format: totals, and every tensor on demand."""

    entry: ModelEntry
    format: Format
    params: int                       # logical parameters (elements of the unquantized weights)
    mtp_layers: int
    group_size: int
    size_bytes: int
    n_tensors: int
    dtype_bytes: dict[str, int]

    def type_bytes(self) -> dict[str, int]:
        return dict(self.dtype_bytes)

    def tensors(self) -> list[CkptTensor]:
        """Every stored tensor, in index order (about 92,000 for the V3 family)."""
        hp = self.entry.hparams
        sel = self.format.selector(hp)
        return [t for w in hf_weights(hp, self.mtp_layers) for t in stored(w, self.format, sel, self.group_size)]


def _layer_kind(hp: Hparams, i: int) -> tuple[bool, bool]:
    return (hp.arch == "deepseek2" and hp.is_moe and i >= hp.n_layer_dense_lead, i >= hp.n_layer)


@lru_cache(maxsize=64)
def checkpoint(entry: ModelEntry, fmt: Format) -> Checkpoint:
    """The model's checkpoint in this format. Layers of one kind (dense, MoE, MTP) store the same
    tensors under other names, so each kind is expanded once and counted per layer."""
    fmt.check_applies(entry)
    hp = entry.hparams
    n_mtp = mtp_layers(entry) if fmt.mtp_in_checkpoint else 0
    sel = fmt.selector(hp)
    gs = fmt.group_for(entry.id)
    dtypes: dict[str, int] = {}
    totals = [0, 0, 0]                # bytes, tensors, params

    def add(ws: list[HFWeight], times: int = 1) -> None:
        for w in ws:
            totals[2] += w.n_elements * times
            for t in stored(w, fmt, sel, gs):
                dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.bytes * times
                totals[0] += t.bytes * times
                totals[1] += times

    first, last = model_weights(hp)
    add(first + last)
    kinds: dict[tuple[bool, bool], tuple[int, int]] = {}
    for i in range(hp.n_layer + n_mtp):
        k = _layer_kind(hp, i)
        first_i, n = kinds.get(k, (i, 0))
        kinds[k] = (first_i, n + 1)
    for first_i, n in kinds.values():
        add(layer_weights(hp, first_i), n)
    return Checkpoint(entry, fmt, totals[2], n_mtp, gs, totals[0], totals[1], dtypes)


def repo_for(fmt: Format, entry: ModelEntry) -> str | None:
    return fmt.repos.get(entry.id)

