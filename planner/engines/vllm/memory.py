"""vLLM's memory model: tensor x pipeline parallelism and the gpu_memory_utilization budget.

Layout: on one node TP = the GPUs; over N nodes TP = GPUs per node and PP = N (vLLM's own advice
for multi-node serving: tensor parallelism inside a node, pipeline parallelism across nodes), with
a Ray cluster joining the nodes and `vllm serve` started on the head.

Memory on each GPU (profiles/engines/vllm.toml):
- budget = gpu_memory_utilization x total memory; vLLM puts the weights, the peak activations of
  its profiling run and then the KV cache (in blocks) into it;
- the rest of the GPU holds the CUDA context (the device profile's reserve_bytes) and the CUDA
  graphs, captured after the KV cache is allocated; when they need more than is left outside the
  budget the plan shows it as overhead and the GPU over-commits;
- vLLM refuses to start unless the KV cache holds one full --max-model-len sequence, so a format
  fits when the smallest stage's KV blocks hold `ctx` tokens. With PP every stage gets as many
  blocks as the smallest.
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
    pp_layer_counts,
    stage_weight_bytes,
)
from planner.core.plan import DeviceMemory
from planner.core.serving.hf_checkpoint import Format
from planner.core.serving.plan_formats import EngineOptions, ceil_div, device_label, engine_defaults, kv_dtype_bytes, stage_layers

ENGINE = "vllm"


def layout_for(entry: ModelEntry, fmt: Format, gpus: int, nodes: int) -> tuple[Layout, str]:
    """TP inside a node (the largest size up to the node's GPUs the model shards into), PP across nodes."""
    pp_layer_counts(entry.hparams.n_layer, nodes)
    tp, why = choose_tp(entry.hparams, fmt, entry.id, gpus)
    return Layout(tp=tp, pp=nodes), why


def max_num_batched_tokens(device_id: str) -> int:
    d = engine_defaults(ENGINE)
    return int(d.get("max_num_batched_tokens_by_device", {}).get(device_id, d["max_num_batched_tokens"]))


def fit(entry: ModelEntry, fmt: Format, profile, gpus: int, nodes: int, ctx: int, opts: EngineOptions,
        sequences: int = 1) -> tuple[EngineFit, list[DeviceMemory]]:
    d = engine_defaults(ENGINE)
    hp = entry.hparams
    layout, why = layout_for(entry, fmt, gpus, nodes)
    util = opts.gpu_memory_utilization or float(d["gpu_memory_utilization"])
    total = int(profile.memory_bytes)
    budget = int(util * total)
    max_seqs = opts.max_num_seqs or int(d["max_num_seqs"])
    T = max_num_batched_tokens(profile.id)
    block = int(d["mla_block_size"] if hp.arch == "deepseek2" else d["block_size"])
    kv_b = kv_dtype_bytes(fmt, opts)
    per_tok_act = activation_bytes_per_token(hp, layout.tp, layout.tp)
    graph_bs = min(int(d["cuda_graph_max_bs"]), max_seqs)

    weights = stage_weight_bytes(hp, fmt, entry.id, layout)
    counts = pp_layer_counts(hp.n_layer, layout.pp)
    ranks, budgets = [], []
    for s, (w, n) in enumerate(zip(weights, counts)):
        last = s == layout.pp - 1
        act = T * per_tok_act + (logits_bytes(hp, min(max_seqs, T)) if last else 0)
        graphs = graph_bs * per_tok_act + int(d["cuda_graph_fixed_bytes"])
        kv_tok = n * kv_values_per_token_layer(hp, layout.tp) * kv_b
        ranks.append(RankMemory(s, n, w, kv_tok, act, graphs))
        budgets.append(budget - w - act)
    blocks = min(max(0, b) // (block * r.kv_bytes_per_token) for b, r in zip(budgets, ranks))
    kv_tokens = blocks * block
    per_seq_blocks = ceil_div(ctx, block)
    max_sequences = min(max_seqs, blocks // per_seq_blocks)
    notes = [f"vLLM {d['version']} defaults: gpu_memory_utilization {util}, max_num_batched_tokens {T}, "
             f"max_num_seqs {max_seqs}, KV blocks of {block} tokens ({'fp8' if kv_b == 1 else 'model dtype'})"]
    if layout.tp < gpus:
        notes.append(f"TP {layout.tp} uses {layout.tp} of the {gpus} GPUs per node ({why}); the others are free "
                     "for another replica")
    if hp.arch == "deepseek2":
        notes.append("MLA latent cache: every tensor-parallel rank holds the whole cache of its layers")
    if kv_tokens < ctx:
        notes.append(f"KV cache holds {kv_tokens:,} tokens, less than one {ctx:,}-token sequence: vLLM would refuse "
                     "to start (lower --max-model-len, or add GPUs)")
    slack = total - budget
    need = int(profile.reserve_bytes) + max(r.cuda_graph_bytes for r in ranks)
    if need > slack:
        notes.append(f"CUDA context and graphs (~{need / 2**30:.1f} GiB) exceed the {slack / 2**30:.1f} GiB left "
                     "outside gpu_memory_utilization: lower it, or use --enforce-eager")
    fit_ = EngineFit(ENGINE, layout, nodes, gpus, ranks, budgets, kv_tokens, max_sequences, ctx, notes)

    layers = stage_layers(counts)
    devices = []
    for node in range(nodes):
        r = ranks[node] if layout.pp > 1 else ranks[0]
        for g in range(layout.tp):
            kv = r.kv_bytes_per_token * per_seq_blocks * block * sequences
            devices.append(DeviceMemory(
                device=device_label(node, g, nodes), weights_bytes=r.weights_bytes, kv_bytes=kv,
                compute_bytes=r.activation_bytes, overhead_bytes=max(slack, need),
                capacity_bytes=total, layers=layers[r.stage]))
    return fit_, devices
