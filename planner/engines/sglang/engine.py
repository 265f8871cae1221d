"""SGLang: the `sglang.launch_server` command of every node for a plan; its memory model is
planner.engines.sglang.memory (one tensor-parallel group over every node, data-parallel attention)."""

from __future__ import annotations

from planner.core.catalog import ModelEntry
from planner.core.serving.hf_checkpoint import Format
from planner.core.serving.plan_formats import EngineOptions, engine_defaults
from planner.engines.hf_serving import HFServingEngine, NodeLaunch, model_path_for
from planner.engines.sglang import memory as sglang_memory
from planner.engines.sglang.command_line import parse_commands
from planner.engines.sglang.memory import ENGINE, check_dp_attention, layout_for


def server_command(entry: ModelEntry, fmt: Format, gpus: int, nodes: int, ctx: int, opts: EngineOptions,
                   node_rank: int = 0) -> list[str]:
    d = engine_defaults(ENGINE)
    check_dp_attention(entry, opts)
    layout, _ = layout_for(entry, fmt, gpus, nodes, opts.dp_attention, opts.ep_moe)
    cmd = ["python3", "-m", "sglang.launch_server", "--model-path", model_path_for(fmt, entry, opts),
           "--tp-size", str(layout.tp)]
    if layout.dp_attention:
        cmd += ["--dp-size", str(layout.tp), "--enable-dp-attention"]
    if layout.ep:
        cmd += ["--enable-ep-moe", "--ep-size", str(layout.tp)]
    if nodes > 1:
        cmd += ["--dist-init-addr", f"{opts.head_address}:{d['dist_init_port']}", "--nnodes", str(nodes),
                "--node-rank", str(node_rank)]
    cmd += ["--context-length", str(ctx)]
    if opts.mem_fraction_static is not None:
        cmd += ["--mem-fraction-static", str(opts.mem_fraction_static)]
    if opts.kv_cache_dtype == "fp8":
        cmd += ["--kv-cache-dtype", "fp8_e4m3"]
    if opts.max_num_seqs is not None:
        cmd += ["--max-running-requests", str(opts.max_num_seqs)]
    if opts.served_model_name:
        cmd += ["--served-model-name", opts.served_model_name]
    cmd += ["--trust-remote-code", "--host", opts.host, "--port", str(opts.port or d["port"])]
    return cmd


def node_launches(entry: ModelEntry, fmt: Format, gpus: int, nodes: int, ctx: int,
                  opts: EngineOptions) -> list[NodeLaunch]:
    if nodes == 1:
        return [NodeLaunch(0, "single", [server_command(entry, fmt, gpus, nodes, ctx, opts)])]
    out = []
    for n in range(nodes):
        notes = ["the same command on every node, only --node-rank differs; the HTTP server runs on node 0"]
        out.append(NodeLaunch(n, "head" if n == 0 else "worker",
                              [server_command(entry, fmt, gpus, nodes, ctx, opts, node_rank=n)], notes))
    return out


ENGINE_IMPL = HFServingEngine(ENGINE, "SGLang", sglang_memory.fit, node_launches, parse_commands,
                              frozenset({"mem_fraction_static", "dp_attention", "ep_moe"}))
