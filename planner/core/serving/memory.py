"""Memory per GPU as vLLM and SGLang allocate it: sharded weights, KV cache, activations, reserves.

Pure arithmetic over a Hugging Face checkpoint (hf_checkpoint) and engine defaults
(profiles/engines/*.toml). Exact where the engines are exact (which weights each rank holds, the
bytes of a KV-cache token, block rounding); modelled, and said so, for activations and CUDA graphs.

Parallel layout
- Tensor parallelism (TP) shards every weight as its `split` says (hf_checkpoint docstring).
- Pipeline parallelism (PP, vLLM) gives each stage a contiguous run of decoder layers, as vLLM's
  get_pp_indices: n_layer // pp each, the remainder added one by one to the stages before the last
  (the last also holds the final norm and lm_head; the first the embedding).
- SGLang's data-parallel attention (--enable-dp-attention, dp = tp): the attention weights, the
  embedding and the lm_head are whole on every rank, the MLP and experts stay tensor-parallel; each
  rank serves its own requests with its own KV pool, so concurrency multiplies by dp.
- SGLang's expert parallelism (--enable-ep-moe, ep = tp as its ServerArgs sets it): each rank holds
  n_expert / ep whole routed experts instead of a 1/tp slice of every one (EPMoE.weight_loader keeps
  the experts start_expert_id..end_expert_id); the rest stays tensor-parallel.

KV cache per token and layer on one rank
- MLA (deepseek2): the latent cache, (kv_lora_rank + qk_rope_head_dim) values; NOT divided by TP:
  every rank holds the whole cache of its layers.
- GQA (qwen2/llama): 2 x (kv heads on the rank) x head_dim values, kv heads on the rank being
  n_kv_heads / TP, at least 1 (heads are replicated once TP exceeds them).
Values take the KV dtype (auto = the model's 16-bit dtype, fp8 = 1 byte).

Activations (model, not measured): the engine profiles one forward pass of T tokens (vLLM:
max_num_batched_tokens; SGLang: chunked_prefill_size). The peak is modelled as
T x per-token bytes of the largest transient tensors of one layer on the rank (4 hidden-size
buffers plus the larger of the attention projections, the dense MLP's gate/up/act outputs, or the
fused-MoE caches of the routed tokens: top_k x (3 x expert_ff / TP + hidden)), in 16 bits,
(with expert parallelism EPMoE.forward's buffers, sized for every token's top_k slots whichever rank
holds the expert: gateup_input and down_output of hidden size, gateup_output of 2 x expert_ff and
down_input of expert_ff whole: top_k x (3 x expert_ff + 2 x hidden)), plus the
sampler's float32 logits and probabilities for min(max_num_seqs, T) sequences on the last stage.
CUDA graphs: the largest captured batch x the same per-token bytes plus a fixed pool estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from planner.core.catalog import Hparams
from planner.core.serving.hf_checkpoint import (
    VOCAB_PADDING,
    Format,
    HFWeight,
    layer_weights,
    model_weights,
    stored,
)
from planner.errors import PlannerError


def pp_layer_counts(n_layer: int, pp: int) -> list[int]:
    """Decoder layers per pipeline stage, as vLLM's get_pp_indices partitions them."""
    if pp < 1 or pp > n_layer:
        raise PlannerError(f"pipeline parallel size {pp} must be between 1 and the {n_layer} layers")
    parts = [n_layer // pp] * pp
    for i in range(2, n_layer % pp + 2):
        parts[-i] += 1
    return parts


def _kv_heads_on_rank(hp: Hparams, tp: int) -> int:
    return max(1, hp.n_head_kv // tp)


def _tp_problems(hp: Hparams, tp: int) -> list[str]:
    bad = []
    if hp.n_head % tp:
        bad.append(f"{hp.n_head} attention heads")
    if hp.arch != "deepseek2":
        kv = hp.n_head_kv
        if (tp >= kv and tp % kv) or (tp < kv and kv % tp):
            bad.append(f"{kv} KV heads")
        if hp.n_ff % tp:
            bad.append(f"intermediate size {hp.n_ff}")
    else:
        if hp.n_layer_dense_lead and hp.n_ff % tp:
            bad.append(f"intermediate size {hp.n_ff}")
        if hp.is_moe and hp.n_ff_exp % tp:
            bad.append(f"expert intermediate size {hp.n_ff_exp}")
    return bad


def check_tp(hp: Hparams, tp: int, ep: bool = False) -> None:
    """The divisibility vLLM and SGLang assert when they build the sharded layers."""
    bad = [b for b in _tp_problems(hp, tp) if not (ep and b.startswith("expert"))]
    if ep and hp.n_expert % tp:
        bad.append(f"{hp.n_expert} routed experts")
    if bad:
        ok = [t for t in (1, 2, 4, 8, 16, 32, 64) if not _tp_problems(hp, t)]
        raise PlannerError(
            f"tensor parallel size {tp} does not divide the model's {', '.join(bad)}; valid: {', '.join(map(str, ok))}")


def shard_shape(w: HFWeight, hp: Hparams, tp: int, split: str | None = None) -> tuple[int, ...]:
    """The part of weight `w` one tensor-parallel rank holds."""
    split = split or w.split
    if tp == 1 or split == "rep":
        if split == "vocab":
            v = math.ceil(w.shape[0] / VOCAB_PADDING) * VOCAB_PADDING
            return (v,) + w.shape[1:]
        return w.shape
    if split == "vocab":
        v = math.ceil(w.shape[0] / VOCAB_PADDING) * VOCAB_PADDING
        return (math.ceil(v / tp),) + w.shape[1:]
    if split == "col":
        return (w.shape[0] // tp,) + w.shape[1:]
    if split == "row":
        return (w.shape[0], w.shape[1] // tp)
    if split == "kv":
        hd = hp.n_embd_head
        return (_kv_heads_on_rank(hp, tp) * hd,) + w.shape[1:]
    raise PlannerError(f"unknown split '{split}' for {w.name}")


def _check_quant_shard(w: HFWeight, fmt: Format, sel: str, group: int, full: tuple, shard: tuple) -> None:
    """vLLM rejects shards that cut a scale block or group (Fp8LinearMethod, GPTQ/AWQ Marlin)."""
    from planner.core.serving.hf_checkpoint import is_quantized

    if shard == full or len(full) != 2 or not is_quantized(w, sel):
        return
    if fmt.method == "fp8_block":
        bn, bk = fmt.block
        if shard[0] != full[0] and shard[0] % bn or shard[1] != full[1] and shard[1] % bk:
            raise PlannerError(f"{w.name}: a {shard[0]}x{shard[1]} shard cuts FP8's {bn}x{bk} scale blocks; "
                               "use a smaller tensor parallel size")
    elif fmt.method in ("group", "awq") and shard[1] != full[1] and shard[1] % group:
        raise PlannerError(f"{w.name}: a shard of {shard[1]} input features cuts the {group}-wide quantization "
                           "groups; use a smaller tensor parallel size")


@dataclass(frozen=True)
class Layout:
    """How the engine places the model: TP x PP (x DP attention) over nodes x GPUs."""

    tp: int
    pp: int = 1
    dp_attention: bool = False
    ep: bool = False                 # SGLang expert parallelism, EP size = TP size

    @property
    def world(self) -> int:
        return self.tp * self.pp

    def describe(self) -> str:
        s = f"TP {self.tp}" + (f" x PP {self.pp}" if self.pp > 1 else "")
        return s + (f", DP attention {self.tp}" if self.dp_attention else "") + (f", EP {self.tp}" if self.ep else "")


def _split_for(w: HFWeight, layout: Layout) -> str:
    if layout.dp_attention and (w.group == "attn" or w.role in ("embed", "lm_head")):
        return "rep"
    return w.split


def weights_bytes(ws: list[HFWeight], hp: Hparams, fmt: Format, sel: str, group: int, layout: Layout) -> int:
    total = 0
    experts = 0                      # expert parallelism: every routed expert whole, 1/tp of them per rank
    # the routed experts of a layer are alike (same shapes, roles and splits; names differ by the expert's
    # number): each kind is stored and checked once
    seen: dict[tuple, tuple[int, int]] = {}
    for w in ws:
        key = None
        if w.group == "routed":
            key = (w.shape, w.role, w.split, w.name.rsplit(".", 2)[-2:].__str__())
            if key in seen:
                t_b, e_b = seen[key]
                total += t_b
                experts += e_b
                continue
        t_b = e_b = 0
        if layout.ep and w.group == "routed":
            e_b = sum(t.bytes for t in stored(w, fmt, sel, group, w.shape))
        else:
            split = _split_for(w, layout)
            shape = shard_shape(w, hp, layout.tp, split)
            _check_quant_shard(w, fmt, sel, group, w.shape if split != "vocab" else shape, shape)
            t_b = sum(t.bytes for t in stored(w, fmt, sel, group, shape))
        total += t_b
        experts += e_b
        if key is not None:
            seen[key] = (t_b, e_b)
    return total + experts // layout.tp


def stage_weight_bytes(hp: Hparams, fmt: Format, model_id: str, layout: Layout) -> list[int]:
    """Weight bytes one rank of each pipeline stage holds (the MTP module is not loaded)."""
    return list(_stage_weight_bytes(hp, fmt, model_id, layout))


@lru_cache(maxsize=256)
def _stage_weight_bytes(hp: Hparams, fmt: Format, model_id: str, layout: Layout) -> tuple[int, ...]:
    check_tp(hp, layout.tp, layout.ep)
    sel = fmt.selector(hp)
    group = fmt.group_for(model_id)
    first, last = model_weights(hp)
    # every MoE layer (and every dense one) has the same bytes: compute each kind once
    kinds: dict[bool, int] = {}

    def layer_bytes(i: int) -> int:
        moe = hp.arch == "deepseek2" and hp.is_moe and i >= hp.n_layer_dense_lead
        if moe not in kinds:
            kinds[moe] = weights_bytes(layer_weights(hp, i), hp, fmt, sel, group, layout)
        return kinds[moe]

    out = []
    start = 0
    counts = pp_layer_counts(hp.n_layer, layout.pp)
    for s, n in enumerate(counts):
        b = sum(layer_bytes(i) for i in range(start, start + n))
        if s == 0:
            b += weights_bytes(first, hp, fmt, sel, group, layout)
        if s == len(counts) - 1:
            lw = last
            if hp.tied_embeddings and layout.pp > 1:
                lw = last + [HFWeight("lm_head.weight", (hp.n_vocab, hp.n_embd), "lm_head", "vocab")]
            b += weights_bytes(lw, hp, fmt, sel, group, layout)
        out.append(b)
        start += n
    return tuple(out)


def choose_tp(hp: Hparams, fmt: Format, model_id: str, max_tp: int, multiple_of: int = 1,
              dp_attention: bool = False, ep: bool = False) -> tuple[int, str]:
    """The largest tensor-parallel size up to max_tp that the model and format shard into, and why it
    is smaller when it is (heads that do not divide, quantization groups or FP8 blocks a shard would
    cut). TP sizes must be multiples of `multiple_of` (SGLang: the number of nodes)."""
    first_problem = ""
    for t in range(max_tp, 0, -1):
        if t % multiple_of:
            continue
        try:
            check_tp(hp, t, ep)
            stage_weight_bytes(hp, fmt, model_id, Layout(tp=t, dp_attention=dp_attention, ep=ep))
        except PlannerError as e:
            first_problem = first_problem or str(e)
            continue
        return t, ("" if t == max_tp else first_problem)
    raise PlannerError(first_problem or f"no tensor parallel size up to {max_tp} serves {model_id}")


def kv_values_per_token_layer(hp: Hparams, tp: int) -> int:
    """KV-cache values one rank stores per token and layer (see the module docstring)."""
    if hp.arch == "deepseek2":
        return hp.n_lora_kv + hp.n_rot
    return 2 * _kv_heads_on_rank(hp, tp) * hp.n_embd_head


def activation_bytes_per_token(hp: Hparams, tp: int, attn_tp: int, ep: bool = False) -> int:
    """Largest transient activations of one layer per token on a rank, 16-bit (a model)."""
    H = hp.n_embd
    if hp.arch == "deepseek2":
        nh = hp.n_head // attn_tp
        attn = nh * (hp.n_embd_head_qk_nope + hp.n_rot) + (hp.n_lora_kv + hp.n_rot) \
            + nh * (hp.n_embd_head_qk_nope + hp.n_embd_head_v) + nh * hp.n_embd_head_v
    else:
        attn = (hp.n_head * hp.n_embd_head) // attn_tp + 2 * _kv_heads_on_rank(hp, attn_tp) * hp.n_embd_head
    big = attn
    if hp.arch != "deepseek2" or hp.n_layer_dense_lead or not hp.is_moe:
        big = max(big, 3 * hp.n_ff // tp)
    if hp.arch == "deepseek2" and hp.is_moe:
        big = max(big, hp.n_expert_used * ((3 * hp.n_ff_exp + 2 * H) if ep else (3 * hp.n_ff_exp // tp + H)))
    return 2 * (4 * H + big)


def logits_bytes(hp: Hparams, n_seqs: int) -> int:
    """Sampler buffers: float32 logits and probabilities over the vocabulary."""
    return n_seqs * hp.n_vocab * 4 * 2


@dataclass
class RankMemory:
    """One GPU (rank) of a stage."""

    stage: int
    layers: int
    weights_bytes: int
    kv_bytes_per_token: int          # all this rank's layers
    activation_bytes: int            # peak of the profiling forward pass
    cuda_graph_bytes: int


@dataclass
class EngineFit:
    """Where the engine's memory goes on each stage, and what that leaves for the KV cache."""

    engine: str
    layout: Layout
    nodes: int
    gpus_per_node: int
    ranks: list[RankMemory]          # one per pipeline stage (the TP ranks of a stage are alike)
    kv_budget_bytes: list[int]       # per stage: what the engine gives the KV cache on one rank
    kv_tokens: int                   # tokens the smallest stage can hold (per DP rank with DP attention)
    max_sequences: int               # full-context sequences served at once (all DP ranks)
    ctx: int
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.kv_tokens >= self.ctx
