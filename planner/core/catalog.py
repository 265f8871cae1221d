"""Model catalog: architectures from profiles/models/*.toml, a Hugging Face config.json, or a GGUF header.

Every source is reduced to one `Hparams` (llama.cpp's names for the hyper-parameters), from which
`architectures.enumerate_tensors` derives exactly the tensors llama.cpp's converter writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from planner.core.data_files import read_toml
from planner.core.paths import profiles_dir
from planner.errors import PlannerError, choices, valid_hint

ARCHITECTURES = ("deepseek2", "qwen2", "llama", "qwen3", "deepseek32", "deepseek4")

# Hugging Face architecture class -> llama.cpp architecture
_HF_ARCH = {
    "DeepseekV3ForCausalLM": "deepseek2",
    "DeepseekV2ForCausalLM": "deepseek2",
    "DeepseekV32ForCausalLM": "deepseek32",
    "DeepseekV4ForCausalLM": "deepseek4",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
}


@dataclass(frozen=True)
class Hparams:
    """Hyper-parameters under llama.cpp's names (llama_hparams / GGUF keys)."""

    arch: str
    n_embd: int
    n_vocab: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    tied_embeddings: bool = False
    # dense attention (qwen2/llama)
    n_embd_head: int = 0
    qkv_bias: bool = False
    qk_norm: bool = False               # qwen3: per-head RMS norms of q and k (attn_q_norm, attn_k_norm)
    rope_freqs: bool = False            # llama-3 rope scaling writes a rope_freqs tensor
    # deepseek2 (MLA + MoE)
    n_lora_q: int = 0                   # 0: no query LoRA (V2-Lite): a plain attn_q
    n_lora_kv: int = 0
    n_rot: int = 0                      # qk_rope_head_dim
    n_embd_head_qk_nope: int = 0
    n_embd_head_v: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_exp: int = 0
    n_layer_dense_lead: int = 0
    exp_probs_b: bool = False           # DeepSeek-V3 routing bias (topk_method noaux_tc)
    # deepseek32 (DeepSeek Sparse Attention). n_layer counts the NextN/MTP block(s) the converter appends
    # (llama.cpp's n_layer_all, the GGUF block_count); the trunk is n_layer - n_layer_nextn.
    n_layer_nextn: int = 0
    indexer_n_head: int = 0
    indexer_head_size: int = 0
    indexer_top_k: int = 0
    # deepseek4 (DeepSeek-V4; head size in n_embd_head, rope dims in n_rot, query LoRA in n_lora_q, the
    # indexer fields above): the sliding window, the per-layer KV compression ratios as config.json lists
    # them (0: window only, 4: CSA with the lightning indexer, 128: HCA; llama.cpp reads the first
    # block_count), the grouped low-rank output projection, the hyper-connection count, the hash-routed
    # leading layers (an I32 token -> experts table instead of a routing bias)
    n_swa: int = 0
    compress_ratios: tuple[int, ...] = ()
    n_out_groups: int = 0
    n_lora_o: int = 0
    n_hc: int = 0
    n_hash_layers: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    def llm_type(self) -> str:
        """llama.cpp's model type where the quantization rules look at it (the 70B attn_v bump)."""
        if self.arch == "llama" and self.n_layer == 80:
            return "65B" if self.n_head == self.n_head_kv else "70B"
        if self.arch == "qwen2" and self.n_layer == 80:
            return "70B"
        return "unknown"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    hparams: Hparams
    source: str
    gguf_source_type: str = "bf16"
    family: str = ""
    hf_repo: str = ""
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    in_auto: bool = True                 # among --model auto's candidates (the profile's `auto`)
    # the precisions the checkpoint was released in (profiles/accuracy/release.toml): what a native
    # scheme keeps (planner.core.accuracy.recommend.native_schemes)
    release_precision: tuple[str, ...] = ()
    # how llama.cpp's converter writes the release: "outtype" (every tensor in --outtype
    # gguf_source_type) or "release" (its own types whatever --outtype says; the launch recipe converts
    # without one)
    gguf_convert: str = "outtype"
    gguf_convert_writes: str = ""        # with "release": what the converter writes, in words


# llama.cpp's own limits (src/llama-hparams.h): a model with more layers or experts does not load
MAX_LAYERS = 512                       # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024                     # LLAMA_MAX_EXPERTS
MAX_COUNT = (1 << 32) - 1              # llama_hparams keeps the other counts as uint32_t
_LIMITS = {"num_hidden_layers": (MAX_LAYERS, "LLAMA_MAX_LAYERS"),
           "n_routed_experts": (MAX_EXPERTS, "LLAMA_MAX_EXPERTS")}


def _int_value(v: Any, key: str, where: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        what = "a positive integer" if low > 0 else "a non-negative integer"
        raise PlannerError(f"{where}: '{key}' must be {what}, got {json.dumps(v)}")
    top, name = _LIMITS.get(key.rsplit(".", 1)[-1], (MAX_COUNT, "2^32-1, llama.cpp's uint32 counts"))
    if v > top:
        raise PlannerError(f"{where}: '{key}' is {v}, more than llama.cpp accepts ({top}, {name})")
    return v


def _req(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise PlannerError(f"{where}: config is missing '{key}'")
    return _int_value(cfg[key], key, where, 1)


def _opt_int(cfg: dict[str, Any], key: str, where: str, default: int, low: int = 0) -> int:
    """An optional integer key: absent or null gives `default`."""
    v = cfg.get(key)
    return default if v is None else _int_value(v, key, where, low)


def _opt_bool(cfg: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    v = cfg.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise PlannerError(f"{where}: '{key}' must be true or false, got {json.dumps(v)}")
    return v


def _opt_obj(cfg: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """An optional JSON object (rope_scaling, quantization_config): absent or null gives {}."""
    v = cfg.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PlannerError(f"{where}: '{key}' must be an object or null, got {_json_kind(v)}")
    return v


def _opt_str(cfg: dict[str, Any], key: str, where: str) -> str | None:
    v = cfg.get(key)
    if v is not None and not isinstance(v, str):
        raise PlannerError(f"{where}: '{key}' must be a string or null, got {_json_kind(v)}")
    return v


def _json_kind(v: Any) -> str:
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return json.dumps(v) if isinstance(v, (bool, int, float, str)) else type(v).__name__


def _architectures(cfg: dict[str, Any], where: str) -> list[str]:
    archs = cfg.get("architectures")
    if archs is None:
        return []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise PlannerError(f"{where}: 'architectures' must be a list of class names, got {json.dumps(archs)}")
    return archs


def check_config(cfg: dict[str, Any], where: str) -> None:
    """The keys other readers of a config take later (hf_checkpoint, the GGUF writer), typed now, so
    that a malformed one is named here: nested objects may be null or objects, never anything else."""
    for key in ("rope_scaling", "quantization_config"):
        obj = _opt_obj(cfg, key, where)
        for sub in ("rope_type", "type", "quant_method"):
            v = obj.get(sub)
            if v is not None and not isinstance(v, str):
                raise PlannerError(f"{where}: '{key}.{sub}' must be a string or null, got {_json_kind(v)}")
    _opt_int(cfg, "num_nextn_predict_layers", where, 0)
    _opt_str(cfg, "topk_method", where)


def hparams_from_config(cfg: dict[str, Any], where: str) -> Hparams:
    """Hparams from a Hugging Face config.json dictionary, as llama.cpp's converter reads it; any key
    of the wrong type (a list for an object, a string for a number, NaN) is a PlannerError naming the
    file and the key."""
    if not isinstance(cfg, dict):
        raise PlannerError(f"{where}: the config must be an object, got {_json_kind(cfg)}")
    archs = _architectures(cfg, where)
    arch = next((_HF_ARCH[a] for a in archs if a in _HF_ARCH), None)
    if arch is None:
        raise PlannerError(
            f"{where}: unsupported architectures {archs!r}; supported: {choices(_HF_ARCH)}")
    check_config(cfg, where)
    n_embd = _req(cfg, "hidden_size", where)
    n_head = _req(cfg, "num_attention_heads", where)
    common = dict(
        arch=arch,
        n_embd=n_embd,
        n_vocab=_req(cfg, "vocab_size", where),
        n_layer=_req(cfg, "num_hidden_layers", where),
        n_head=n_head,
        # DeepSeek-V4 has no dense FFN and no intermediate_size (the converter then writes no feed_forward_length)
        n_ff=_opt_int(cfg, "intermediate_size", where, 0) if arch == "deepseek4" else _req(cfg, "intermediate_size", where),
        n_ctx_train=_opt_int(cfg, "max_position_embeddings", where, 0) or 4096,
        tied_embeddings=_opt_bool(cfg, "tie_word_embeddings", where),
    )
    if arch == "deepseek4":
        return _deepseek4_hparams(cfg, where, common)
    if arch in ("deepseek2", "deepseek32"):
        n_routed = _opt_int(cfg, "n_routed_experts", where, 0)
        dsa = {}
        if arch == "deepseek32":
            # DeepseekV32Model (conversion/deepseek.py): block_count = num_hidden_layers + the NextN layers,
            # head_count_kv 1 (MLA only), the indexer's head count, head size and top-k
            nextn = _opt_int(cfg, "num_nextn_predict_layers", where, 0)
            common["n_layer"] += nextn
            if common["n_layer"] > MAX_LAYERS:
                raise PlannerError(f"{where}: {common['n_layer']} blocks with the NextN layers, more than "
                                   f"llama.cpp loads ({MAX_LAYERS}, LLAMA_MAX_LAYERS)")
            dsa = dict(n_layer_nextn=nextn, indexer_n_head=_req(cfg, "index_n_heads", where),
                       indexer_head_size=_req(cfg, "index_head_dim", where),
                       indexer_top_k=_req(cfg, "index_topk", where))
        return Hparams(
            **common,
            **dsa,
            # deepseek2: the legacy layout's MHA view (the MLA layout writes head_count_kv = 1); deepseek32: 1
            n_head_kv=1 if arch == "deepseek32" else n_head,
            n_lora_q=_opt_int(cfg, "q_lora_rank", where, 0),
            n_lora_kv=_req(cfg, "kv_lora_rank", where),
            n_rot=_req(cfg, "qk_rope_head_dim", where),
            n_embd_head_qk_nope=_req(cfg, "qk_nope_head_dim", where),
            n_embd_head_v=_req(cfg, "v_head_dim", where),
            n_expert=n_routed,
            n_expert_used=_opt_int(cfg, "num_experts_per_tok", where, 0),
            n_expert_shared=_opt_int(cfg, "n_shared_experts", where, 0),
            n_ff_exp=_req(cfg, "moe_intermediate_size", where) if n_routed else common["n_ff"],
            n_layer_dense_lead=_opt_int(cfg, "first_k_dense_replace", where, 0) if n_routed else common["n_layer"],
            exp_probs_b=cfg.get("topk_method") == "noaux_tc",
        )
    n_head_kv = _opt_int(cfg, "num_key_value_heads", where, 0) or n_head
    if n_embd % n_head:
        raise PlannerError(f"{where}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    rope = _opt_obj(cfg, "rope_scaling", where)
    return Hparams(
        **common,
        n_head_kv=n_head_kv,
        n_embd_head=_opt_int(cfg, "head_dim", where, 0) or n_embd // n_head,
        qkv_bias=arch == "qwen2",
        qk_norm=arch == "qwen3",
        rope_freqs=arch == "llama" and (rope.get("rope_type") or rope.get("type")) == "llama3",
    )


def _deepseek4_hparams(cfg: dict[str, Any], where: str, common: dict[str, Any]) -> Hparams:
    """DeepseekV4Model (conversion/deepseek.py) and llama_model_deepseek4::load_arch_hparams
    (src/models/deepseek4.cpp): block_count = num_hidden_layers (the MTP block is not converted by default),
    head_count_kv from config.json (1), head_dim as key/value length, compress_ratios at least block_count
    long and each 0, 4 or 128 ("DeepSeek-V4 loader only supports compression ratios 0, 4, and 128"), every
    layer MoE (moe_intermediate_size experts plus n_shared_experts shared), sqrtsoftplus scoring."""
    n_layer = common["n_layer"]
    ratios = cfg.get("compress_ratios")
    if not isinstance(ratios, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ratios):
        raise PlannerError(f"{where}: 'compress_ratios' must be a list of integers, got {_json_kind(ratios)}")
    if len(ratios) < n_layer:
        raise PlannerError(f"{where}: 'compress_ratios' has {len(ratios)} entries for {n_layer} layers "
                           "(llama.cpp: 'DeepSeek-V4 compress_ratios is shorter than block_count')")
    bad = sorted({r for r in ratios[:n_layer] if r not in (0, 4, 128)})
    if bad:
        raise PlannerError(f"{where}: compress ratio {bad[0]} is not 0, 4 or 128 (llama.cpp: 'DeepSeek-V4 loader "
                           "only supports compression ratios 0, 4, and 128')")
    scoring = cfg.get("scoring_func")
    if scoring != "sqrtsoftplus":
        raise PlannerError(f"{where}: scoring_func {json.dumps(scoring)}: llama.cpp's DeepSeek-V4 loader expects "
                           "sqrtsoftplus")
    n_head = common["n_head"]
    n_groups = _req(cfg, "o_groups", where)
    head = _req(cfg, "head_dim", where)
    if n_head % n_groups:
        raise PlannerError(f"{where}: num_attention_heads {n_head} is not a multiple of o_groups {n_groups}")
    n_rot = _req(cfg, "qk_rope_head_dim", where)
    if n_rot > head:
        raise PlannerError(f"{where}: qk_rope_head_dim {n_rot} exceeds head_dim {head}")
    n_hash = _opt_int(cfg, "num_hash_layers", where, 0)
    if n_hash > n_layer:
        raise PlannerError(f"{where}: num_hash_layers {n_hash} exceeds num_hidden_layers {n_layer}")
    n_ff_exp = _req(cfg, "moe_intermediate_size", where)
    return Hparams(
        **common,
        n_head_kv=_opt_int(cfg, "num_key_value_heads", where, 0) or 1,
        n_embd_head=head,
        n_lora_q=_req(cfg, "q_lora_rank", where),
        n_rot=n_rot,
        n_expert=_req(cfg, "n_routed_experts", where),
        n_expert_used=_req(cfg, "num_experts_per_tok", where),
        n_expert_shared=_opt_int(cfg, "n_shared_experts", where, 0),
        n_ff_exp=n_ff_exp,
        exp_probs_b=n_hash < n_layer,
        indexer_n_head=_req(cfg, "index_n_heads", where),
        indexer_head_size=_req(cfg, "index_head_dim", where),
        indexer_top_k=_req(cfg, "index_topk", where),
        n_swa=_req(cfg, "sliding_window", where),
        compress_ratios=tuple(ratios),
        n_out_groups=n_groups,
        n_lora_o=_req(cfg, "o_lora_rank", where),
        n_hc=_req(cfg, "hc_mult", where),
        n_hash_layers=n_hash,
    )


def _load_entry(path: Path) -> ModelEntry:
    data = read_toml(path, "model profile")
    for key in ("id", "name", "source", "config"):
        if key not in data:
            raise PlannerError(f"model profile {path}: missing '{key}'")
    return ModelEntry(
        id=data["id"],
        name=data["name"],
        hparams=hparams_from_config(data["config"], str(path)),
        source=data["source"],
        gguf_source_type=data.get("gguf_source_type", "bf16"),
        family=data.get("family", ""),
        hf_repo=data.get("hf_repo", ""),
        config=data["config"],
        in_auto=bool(data.get("auto", True)),
        release_precision=_release_precision(data.get("release_precision", []), path),
        gguf_convert=_choice(data.get("gguf_convert", "outtype"), ("outtype", "release"), "gguf_convert", path),
        gguf_convert_writes=str(data.get("gguf_convert_writes", "")),
    )


def _release_precision(v: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise PlannerError(f"model profile {path}: 'release_precision' must be a list of precision names")
    return tuple(v)


def _choice(v: Any, valid: tuple[str, ...], key: str, path: Path) -> str:
    if v not in valid:
        raise PlannerError(f"model profile {path}: '{key}' must be one of {', '.join(valid)}, got {json.dumps(v)}")
    return v


@lru_cache(maxsize=1)
def catalog() -> dict[str, ModelEntry]:
    """Every model of profiles/models, by id."""
    out: dict[str, ModelEntry] = {}
    for p in sorted((profiles_dir() / "models").glob("*.toml")):
        e = _load_entry(p)
        out[e.id] = e
    return out


def model_ids() -> list[str]:
    return list(catalog())


def resolve_model(spec: str) -> ModelEntry:
    """A catalog id. (A user's Hugging Face folder is read above the core: planner.model_files, which
    hands its config.json to entry_from_config.)"""
    cat = catalog()
    if spec in cat:
        return cat[spec]
    by_lower = {k.lower(): e for k, e in cat.items()}
    if spec.lower() in by_lower:                 # ids are case-insensitive: DeepSeek-R1 is deepseek-r1
        return by_lower[spec.lower()]
    owner, slash, name = spec.partition("/")
    if slash and owner and name and "/" not in name and not spec.startswith((".", "/")):
        # a Hugging Face repository id (deepseek-ai/DeepSeek-R1): the catalog's model of that name, or hf://
        known = by_lower.get(name.lower())
        raise PlannerError(f"unknown model '{spec}': a Hugging Face repository id? use "
                           + (f"--model {known.id} (the catalog's) or " if known else "")
                           + f"--model hf://{spec} (its config.json is read), or a local model folder")
    raise PlannerError(f"unknown model '{spec}'; {valid_hint(spec, cat)} (or a Hugging Face model folder)")


def entry_from_config(cfg: dict[str, Any], source: str, name: str) -> ModelEntry:
    """The catalog entry of a model known by its Hugging Face config.json (already read by the caller):
    `source` names the file in messages, `name` is the model's id."""
    return ModelEntry(id=name, name=name, hparams=hparams_from_config(cfg, source), source=source, config=cfg)
