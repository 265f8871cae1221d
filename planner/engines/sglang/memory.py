"""SGLang's memory model: tensor parallelism across nodes, mem_fraction_static, data-parallel attention.

Layout: TP = all GPUs of all nodes (SGLang of the v0.4.3 era has no pipeline parallelism; its
multi-node serving runs one tensor-parallel group over --nnodes, joined at --dist-init-addr).
With --enable-dp-attention, dp = tp: attention, embedding and lm_head are whole on each rank and
each rank keeps the KV cache of its own requests (hf_checkpoint / engine_memory docstrings).

Memory on each GPU (profiles/engines/sglang.toml): SGLang measures the memory free at start (total
less the CUDA context, the device profile's reserve_bytes); mem_fraction_static of it holds the
weights and the KV pool, the pool taking whatever the weights leave; the rest is for activations of
a chunked-prefill pass and CUDA graphs. A format fits when the pool holds one `ctx`-token sequence.
"""

from __future__ import annotations

from planner.core.catalog import ModelEntry
from planner.core.serving.memory import (
    EngineFit,
    Layout,
    RankMemory,
    activation_bytes_per_token,
    choose_tp,
    kv_values_per_token_layer,
    logits_bytes,
    stage_weight_bytes,
)
from planner.core.plan import DeviceMemory
from planner.core.serving.hf_checkpoint import Format
from planner.core.serving.plan_formats import EngineOptions, ceil_div, device_label, engine_defaults, kv_dtype_bytes
from planner.errors import PlannerError

ENGINE = "sglang"


def layout_for(entry: ModelEntry, fmt: Format, gpus: int, nodes: int, dp_attention: bool = False,
               ep: bool = False) -> tuple[Layout, str]:
    """One TP group over every node: the largest size up to all GPUs, a multiple of the node count; with
    expert parallelism (ep) the routed experts split by count over the same ranks."""
    if ep and not entry.hparams.is_moe:
        raise PlannerError(f"SGLang's expert parallelism (--enable-ep-moe) needs an MoE model; {entry.id} is dense")
    tp, why = choose_tp(entry.hparams, fmt, entry.id, gpus * nodes, multiple_of=nodes, dp_attention=dp_attention,
                        ep=ep)
    return Layout(tp=tp, pp=1, dp_attention=dp_attention, ep=ep), why


def default_mem_fraction(tp: int) -> float:
    for min_tp, frac in engine_defaults(ENGINE)["mem_fraction_static_by_tp"]:
        if tp >= min_tp:
            return float(frac)
    return 0.88


def check_dp_attention(entry: ModelEntry, opts: EngineOptions) -> None:
    if opts.dp_attention and entry.hparams.arch != "deepseek2":
        raise PlannerError(f"SGLang's DP attention serves DeepSeek (MLA) models only; {entry.id} is "
                           f"{entry.hparams.arch}: drop the DP attention option")


def fit(entry: ModelEntry, fmt: Format, profile, gpus: int, nodes: int, ctx: int, opts: EngineOptions,
        sequences: int = 1) -> tuple[EngineFit, list[DeviceMemory]]:
    d = engine_defaults(ENGINE)
    hp = entry.hparams
    check_dp_attention(entry, opts)
    layout, why = layout_for(entry, fmt, gpus, nodes, opts.dp_attention, opts.ep_moe)
    tp = layout.tp
    per_node = tp // nodes
    dp = tp if layout.dp_attention else 1
    total = int(profile.memory_bytes)
    usable = total - int(profile.reserve_bytes)
    frac = opts.mem_fraction_static or default_mem_fraction(tp)
    static = int(frac * usable)
    small = total / 1e6 < int(d["small_gpu_mb"])
    chunk = int(d["chunked_prefill_size_small_gpu"] if small else d["chunked_prefill_size"])
    if layout.dp_attention:
        chunk //= 2
    graph_bs = int(d["cuda_graph_max_bs"]) if not small else (8 if tp < 4 else 80)
    attn_tp = 1 if layout.dp_attention else tp
    per_tok_act = activation_bytes_per_token(hp, tp, attn_tp, layout.ep)
    act = chunk * per_tok_act + logits_bytes(hp, min(chunk, graph_bs))
    graphs = graph_bs * per_tok_act + int(d["cuda_graph_fixed_bytes"])

    w = stage_weight_bytes(hp, fmt, entry.id, layout)[0]
    kv_tok = hp.n_layer * kv_values_per_token_layer(hp, attn_tp) * kv_dtype_bytes(fmt, opts)
    budget = static - w
    kv_tokens = max(0, budget) // kv_tok
    max_sequences = (kv_tokens // ctx) * dp
    if opts.max_num_seqs is not None:
        max_sequences = min(max_sequences, opts.max_num_seqs)
    rank = RankMemory(0, hp.n_layer, w, kv_tok, act, graphs)
    notes = [f"SGLang {d['version']} defaults: mem_fraction_static {frac} of the memory free at start, "
             f"chunked prefill {chunk} tokens, CUDA graphs up to batch {graph_bs}"]
    if tp < gpus * nodes:
        notes.append(f"TP {tp} uses {per_node} of the {gpus} GPUs per node ({why})")
    if hp.arch == "deepseek2":
        notes.append("MLA latent cache: " + ("each DP-attention rank holds the cache of its own requests"
                                             if dp > 1 else "every tensor-parallel rank holds the whole cache"))
    if kv_tokens < ctx:
        notes.append(f"KV pool holds {kv_tokens:,} tokens, less than one {ctx:,}-token sequence "
                     "(raise --mem-fraction-static, use fewer tokens, or add GPUs)")
    rest = usable - static
    if act + graphs > rest:
        notes.append(f"activations and CUDA graphs (~{(act + graphs) / 2**30:.1f} GiB) exceed the "
                     f"{rest / 2**30:.1f} GiB outside mem_fraction_static: lower it")
    fit_ = EngineFit(ENGINE, layout, nodes, gpus, [rank], [budget], kv_tokens, max_sequences, ctx, notes)

    per_rank_seqs = ceil_div(sequences, dp)
    devices = [DeviceMemory(device=device_label(n, g, nodes), weights_bytes=w,
                            kv_bytes=kv_tok * ctx * per_rank_seqs,
                            compute_bytes=max(rest, act + graphs), overhead_bytes=int(profile.reserve_bytes),
                            capacity_bytes=total, layers=list(range(hp.n_layer)))
               for n in range(nodes) for g in range(per_node)]
    return fit_, devices
