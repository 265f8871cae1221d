"""A ResolvedModel from a GGUF header: Hparams from llama.cpp's metadata keys, the file's own tensors.

    from planner.gguf.model import model_from_gguf
    model = model_from_gguf("DeepSeek-R1-Q4_K_M-00001-of-00009.gguf")
    model.hparams, model.layout, model.file_scheme ("Q4_K_M"), model.tensors (actual types)

Keys read (llama.cpp's names, gguf.Keys): {arch}.embedding_length, block_count, context_length,
feed_forward_length, attention.head_count(_kv), vocab_size (else the tokenizer's token count, else
token_embd's ne1); deepseek2: attention.q_lora_rank, kv_lora_rank, key_length(_mla),
value_length(_mla), rope.dimension_count, expert_count, expert_used_count, expert_shared_count,
expert_feed_forward_length, leading_dense_block_count; qwen2/llama: attention.key_length (head size).

Layout (deepseek2): attn_k_b tensors -> "mla", attn_kv_b -> "legacy"; without either (a first shard
that holds no attention tensor) the _mla keys decide, as they do for llama.cpp.
Booleans that only tensors reveal (tied embeddings, q/k/v biases, rope_freqs, exp_probs_b) come from
the tensors present; for a split model with shards missing, from the one variant of the converter's
tensor list that contains the present tensors and has split.tensors.count tensors. The tensors of
missing shards are then the converter's, typed as llama-quantize's rules for the file's ftype
(general.file_type) would type them; ResolvedModel.source says how many were predicted so.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType as T
from gguf import Keys

from planner.core.catalog import ARCHITECTURES, MAX_COUNT, MAX_EXPERTS, MAX_LAYERS, Hparams
from planner.core.ggml.shards import SPLIT_RE
from planner.core.llamacpp.architectures import TensorSpec, enumerate_tensors
from planner.core.llamacpp.sizing import ResolvedModel
from planner.errors import PlannerError, choices
from planner.gguf.header import GGUFHeader, read_gguf, shown
from planner.safe_text import printable

_BLK = re.compile(r"^blk\.(\d+)\.")
_MISSING = object()


def layer_of(name: str) -> int | None:
    m = _BLK.match(name)
    return int(m.group(1)) if m else None


def _int(h: GGUFHeader, key: str, default: Any = _MISSING) -> int:
    """An integer key ({arch}. templates allowed); per-layer arrays give their largest value."""
    full = h.arch_key(key)
    v = h.metadata.get(full, _MISSING)
    if v is _MISSING:
        if default is _MISSING:
            raise PlannerError(f"{h.path}: GGUF metadata is missing '{full}'")
        return default
    if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
        v = max(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise PlannerError(f"{h.path}: GGUF metadata '{full}' must be a non-negative integer, got {v!r}")
    if v > MAX_COUNT:
        raise PlannerError(f"{h.path}: GGUF metadata '{full}' is {v}, more than llama.cpp's 32-bit counts hold")
    return v


def check_counts(h: GGUFHeader, hp: Hparams) -> None:
    """The counts the planning loops over, against llama.cpp's limits and the tensors present, before
    anything is allocated per layer or expert: a corrupt block_count of 2^31 must not be planned."""
    where = h.path
    if hp.n_layer > MAX_LAYERS:
        raise PlannerError(f"{where}: GGUF metadata '{h.arch_key(Keys.LLM.BLOCK_COUNT)}' is {hp.n_layer}, more "
                           f"than llama.cpp loads ({MAX_LAYERS} layers, LLAMA_MAX_LAYERS)")
    if hp.n_expert > MAX_EXPERTS:
        raise PlannerError(f"{where}: GGUF metadata '{h.arch_key(Keys.LLM.EXPERT_COUNT)}' is {hp.n_expert}, more "
                           f"than llama.cpp loads ({MAX_EXPERTS} experts, LLAMA_MAX_EXPERTS)")
    if hp.n_expert and hp.n_expert_used > hp.n_expert:
        raise PlannerError(f"{where}: GGUF metadata says {hp.n_expert_used} experts used per token of "
                           f"{hp.n_expert}")
    layers = [i for i in (layer_of(t.name) for t in h.tensors) if i is not None]
    if layers and max(layers) >= hp.n_layer:
        raise PlannerError(f"{where}: tensor blk.{max(layers)} but GGUF metadata "
                           f"'{h.arch_key(Keys.LLM.BLOCK_COUNT)}' says {hp.n_layer} layers")
    if h.data_complete and h.split_count == 1:
        nextn = _int(h, Keys.LLM.NEXTN_PREDICT_LAYERS, 0)
        held = max(layers) + 1 if layers else 0
        if hp.n_layer > held + nextn:
            raise PlannerError(f"{where}: GGUF metadata '{h.arch_key(Keys.LLM.BLOCK_COUNT)}' says {hp.n_layer} "
                               f"layers but the file's tensors hold {held}")
    te = h.tensor("token_embd.weight")
    if te is not None and te.shape[0] != hp.n_embd:
        raise PlannerError(f"{where}: GGUF metadata '{h.arch_key(Keys.LLM.EMBEDDING_LENGTH)}' is {hp.n_embd} but "
                           f"token_embd.weight has rows of {te.shape[0]}")
    for t in h.tensors:
        if t.name.endswith("_exps.weight") and len(t.shape) == 3 and t.shape[2] != hp.n_expert:
            raise PlannerError(f"{where}: GGUF metadata '{h.arch_key(Keys.LLM.EXPERT_COUNT)}' is {hp.n_expert} "
                               f"but {shown(t.name)} holds {t.shape[2]} experts")


def check_shapes(h: GGUFHeader, hp: Hparams, layout: str | None) -> None:
    """Every tensor present against the shape the metadata gives it (llama.cpp's loader refuses a
    tensor of another shape: "tensor has wrong shape"), so that no count the plan multiplies by
    (heads, head sizes, feed-forward and LoRA widths, the vocabulary) is left unchecked."""
    expected = {s.name: _trim(s.shape) for s in enumerate_tensors(hp, layout, T.BF16)}
    for t in h.tensors:
        want = expected.get(t.name)
        if want is not None and _trim(t.shape) != want:
            raise PlannerError(f"{h.path}: tensor {t.name} has shape {list(t.shape)} but the GGUF metadata "
                               f"gives it {list(want)} (llama.cpp refuses such a file)")


def _trim(shape: tuple[int, ...]) -> tuple[int, ...]:
    s = tuple(shape)
    while len(s) > 1 and s[-1] == 1:
        s = s[:-1]
    return s


def _n_vocab(h: GGUFHeader) -> int:
    n = _int(h, Keys.LLM.VOCAB_SIZE, 0)
    if n:
        return n
    tokens = h.metadata.get(Keys.Tokenizer.LIST)
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    te = h.tensor("token_embd.weight")
    if te is not None and len(te.shape) >= 2:
        return te.shape[1]
    raise PlannerError(f"{h.path}: no vocabulary size ({h.arch_key(Keys.LLM.VOCAB_SIZE)}, {Keys.Tokenizer.LIST} "
                       "or token_embd.weight)")


def _layout(h: GGUFHeader, names: set[str]) -> str:
    if any(n.endswith("attn_k_b.weight") for n in names):
        return "mla"
    if any(n.endswith("attn_kv_b.weight") for n in names):
        return "legacy"
    return "mla" if h.arch_key(Keys.Attention.KEY_LENGTH_MLA) in h.metadata else "legacy"


def hparams_from_header(h: GGUFHeader) -> tuple[Hparams, str | None]:
    """(Hparams, layout) from the metadata; the tensor-revealed booleans from the tensors present."""
    arch = h.architecture
    if arch is None:
        raise PlannerError(f"{h.path}: GGUF metadata has no general.architecture"
                           + (" (the first shard, which holds the metadata, is missing)" if h.missing_shards else ""))
    if arch not in ARCHITECTURES:
        raise PlannerError(f"{h.path}: architecture {shown(arch)} is not supported; supported: {choices(ARCHITECTURES)}")
    names = {t.name for t in h.tensors}
    n_embd = _int(h, Keys.LLM.EMBEDDING_LENGTH)
    n_head = _int(h, Keys.Attention.HEAD_COUNT)
    if n_embd == 0 or n_head == 0:
        raise PlannerError(f"{h.path}: embedding_length and head_count must be positive")
    common = dict(
        arch=arch,
        n_embd=n_embd,
        n_vocab=_n_vocab(h),
        n_layer=_int(h, Keys.LLM.BLOCK_COUNT),
        n_head=n_head,
        n_ff=_int(h, Keys.LLM.FEED_FORWARD_LENGTH, 0),
        n_ctx_train=_int(h, Keys.LLM.CONTEXT_LENGTH),
        tied_embeddings="output.weight" not in names,
    )
    if arch == "deepseek4":
        return _deepseek4_hparams(h, names, common), None
    if arch in ("deepseek2", "deepseek32"):
        layout = _layout(h, names) if arch == "deepseek2" else "mla"
        n_rot = _int(h, Keys.Rope.DIMENSION_COUNT)
        if layout == "mla" and h.arch_key(Keys.Attention.KEY_LENGTH_MLA) in h.metadata:
            k_head = _int(h, Keys.Attention.KEY_LENGTH_MLA)
            v_head = _int(h, Keys.Attention.VALUE_LENGTH_MLA)
        else:
            k_head = _int(h, Keys.Attention.KEY_LENGTH)
            v_head = _int(h, Keys.Attention.VALUE_LENGTH)
        if k_head <= n_rot:
            raise PlannerError(f"{h.path}: key length {k_head} must exceed rope.dimension_count {n_rot}")
        n_expert = _int(h, Keys.LLM.EXPERT_COUNT, 0)
        dsa = {}
        if arch == "deepseek32":
            dsa = dict(n_layer_nextn=_int(h, Keys.LLM.NEXTN_PREDICT_LAYERS, 0),
                       indexer_n_head=_int(h, f"{arch}.attention.indexer.head_count"),
                       indexer_head_size=_int(h, f"{arch}.attention.indexer.key_length"),
                       indexer_top_k=_int(h, f"{arch}.attention.indexer.top_k"))
            if dsa["n_layer_nextn"] > common["n_layer"]:
                raise PlannerError(f"{h.path}: {dsa['n_layer_nextn']} NextN layers of {common['n_layer']} blocks")
        hp = Hparams(
            **common,
            **dsa,
            # the catalog's convention: deepseek2 the MHA view (MLA files store head_count_kv = 1); deepseek32 1
            n_head_kv=1 if arch == "deepseek32" else n_head,
            n_lora_q=_int(h, Keys.Attention.Q_LORA_RANK, 0),
            n_lora_kv=_int(h, Keys.Attention.KV_LORA_RANK),
            n_rot=n_rot,
            n_embd_head_qk_nope=k_head - n_rot,
            n_embd_head_v=v_head,
            n_expert=n_expert,
            n_expert_used=_int(h, Keys.LLM.EXPERT_USED_COUNT, 0),
            n_expert_shared=_int(h, Keys.LLM.EXPERT_SHARED_COUNT, 0),
            n_ff_exp=_int(h, Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, common["n_ff"]),
            n_layer_dense_lead=_int(h, Keys.LLM.LEADING_DENSE_BLOCK_COUNT, 0),
            exp_probs_b=any(n.endswith("exp_probs_b.bias") for n in names),
        )
        return hp, (layout if arch == "deepseek2" else None)
    n_head_kv = _int(h, Keys.Attention.HEAD_COUNT_KV, n_head)
    if n_head_kv == 0:
        raise PlannerError(f"{h.path}: head_count_kv must be positive")
    hp = Hparams(
        **common,
        n_head_kv=n_head_kv,
        n_embd_head=_int(h, Keys.Attention.KEY_LENGTH, n_embd // n_head),
        qkv_bias="blk.0.attn_q.bias" in names,
        rope_freqs="rope_freqs.weight" in names,
        qk_norm=arch == "qwen3",
    )
    return hp, None


def _deepseek4_hparams(h: GGUFHeader, names: set[str], common: dict) -> Hparams:
    """What llama_model_deepseek4::load_arch_hparams reads (src/models/deepseek4.cpp), under the catalog's
    names; compress_ratios must cover block_count and be 0, 4 or 128, as llama.cpp requires."""
    a = h.architecture
    n_layer = common["n_layer"]
    ratios = h.metadata.get(f"{a}.attention.compress_ratios")
    if not isinstance(ratios, list) or len(ratios) < n_layer:
        raise PlannerError(f"{h.path}: {a}.attention.compress_ratios is missing or shorter than block_count "
                           "(llama.cpp: 'DeepSeek-V4 compress_ratios is shorter than block_count')")
    if any(r not in (0, 4, 128) for r in ratios[:n_layer]):
        raise PlannerError(f"{h.path}: compress ratios must be 0, 4 or 128 (llama.cpp's DeepSeek-V4 loader)")
    n_hash = _int(h, f"{a}.hash_layer_count", 0)
    return Hparams(
        **common,
        n_head_kv=_int(h, Keys.Attention.HEAD_COUNT_KV, 1),
        n_embd_head=_int(h, Keys.Attention.KEY_LENGTH),
        n_lora_q=_int(h, Keys.Attention.Q_LORA_RANK),
        n_rot=_int(h, Keys.Rope.DIMENSION_COUNT),
        n_expert=_int(h, Keys.LLM.EXPERT_COUNT),
        n_expert_used=_int(h, Keys.LLM.EXPERT_USED_COUNT),
        n_expert_shared=_int(h, Keys.LLM.EXPERT_SHARED_COUNT, 0),
        n_ff_exp=_int(h, Keys.LLM.EXPERT_FEED_FORWARD_LENGTH),
        exp_probs_b=any(n.endswith("exp_probs_b.bias") for n in names),
        indexer_n_head=_int(h, f"{a}.attention.indexer.head_count"),
        indexer_head_size=_int(h, f"{a}.attention.indexer.key_length"),
        indexer_top_k=_int(h, f"{a}.attention.indexer.top_k"),
        n_swa=_int(h, f"{a}.attention.sliding_window"),
        compress_ratios=tuple(int(r) for r in ratios),
        n_out_groups=_int(h, f"{a}.attention.output_group_count"),
        n_lora_o=_int(h, f"{a}.attention.output_lora_rank"),
        n_hc=_int(h, f"{a}.hyper_connection.count"),
        n_hash_layers=min(n_hash, n_layer),
    )


def _variants(hp: Hparams) -> list[Hparams]:
    """Every setting of the booleans only the tensor list reveals."""
    flags = ["tied_embeddings"] + (["exp_probs_b"] if hp.arch in ("deepseek2", "deepseek32")
                                   else ["qkv_bias", "rope_freqs"])
    return [replace(hp, **dict(zip(flags, combo))) for combo in itertools.product((False, True), repeat=len(flags))]


def _complete_missing(h: GGUFHeader, hp: Hparams, layout: str | None,
                      present: list[TensorSpec]) -> tuple[Hparams, list[TensorSpec], int]:
    """For a split model with shards missing: the converter's variant matching the present tensors,
    and the missing tensors typed by the file's ftype rules. Returns (hparams, tensors, n_predicted)."""
    names = {t.name for t in present}
    total = h.expected_tensor_count
    matches = []
    for v in _variants(hp):
        specs = enumerate_tensors(v, layout, T.BF16)
        vnames = {s.name for s in specs}
        if names <= vnames and (total is None or len(specs) == total):
            matches.append((v, specs))
    if len(matches) > 1:    # the count cannot tell (e.g. tied + rope_freqs vs neither): what is present decides
        matches = [m for m in matches if m[0] == hp]
    if len(matches) != 1:
        return hp, present, 0
    hp, specs = matches[0]
    missing = [s for s in specs if s.name not in names]
    types = _predicted_types(h, hp, layout, specs)
    by_name = dict(zip((s.name for s in specs), types))
    filled = [replace(s, src_type=by_name[s.name]) for s in missing]
    return hp, present + filled, len(filled)


def _predicted_types(h: GGUFHeader, hp: Hparams, layout: str | None, specs: list[TensorSpec]) -> list[T]:
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import select_scheme_types

    name = h.file_type_name
    try:
        scheme = resolve_scheme(name) if name else None
    except PlannerError:
        scheme = None
    if scheme is None:
        return [s.src_type for s in specs]
    full = ResolvedModel(id="", name="", hparams=hp, layout=layout, tensors=specs, source="")
    types, _, _ = select_scheme_types(full, scheme)
    return types


def _model_id(path: Path) -> str:
    m = SPLIT_RE.match(path.name)
    return m["prefix"] if m else path.stem


def model_from_header(h: GGUFHeader) -> ResolvedModel:
    hp, layout = hparams_from_header(h)
    check_counts(h, hp)
    check_shapes(h, hp, layout)
    tensors = [TensorSpec(t.name, t.shape, t.type, layer_of(t.name)) for t in h.tensors]
    source = f"GGUF header {h.path}"
    n_pred = 0
    if h.missing_shards:
        hp, tensors, n_pred = _complete_missing(h, hp, layout, tensors)
        read = f"{len(h.shards)} of {h.split_count} shards read"
        if h.empty_shards:
            read += "; empty (0 bytes), counted as missing: " + ", ".join(Path(p).name for p in h.empty_shards)
        if n_pred:
            source += f" ({read}; {n_pred} tensors of the missing shards typed by {h.file_type_name}'s rules)"
        else:
            source += f" ({read}; the tensors of the missing shards are not counted)"
    mid = _model_id(Path(h.path))
    name = h.metadata.get(Keys.General.NAME)        # the file's text: control characters made visible
    return ResolvedModel(
        id=mid, name=printable(name) if isinstance(name, str) and name else mid, hparams=hp, layout=layout,
        tensors=tensors, source=source, file_scheme=h.file_type_name or "file", file_path=h.path,
        metadata=h.metadata_summary(), predicted_tensors=n_pred,
    )


def model_from_gguf(path: str) -> ResolvedModel:
    """The model a GGUF file (or the shards present of a split model) holds, from its header alone."""
    return model_from_header(read_gguf(path))
