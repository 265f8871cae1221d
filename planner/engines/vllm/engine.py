"""vLLM: the `vllm serve` command (with a Ray cluster across nodes) for a plan; its memory model is
planner.engines.vllm.memory (tensor parallelism inside a node, pipeline parallelism across nodes)."""

from __future__ import annotations

from planner.core.catalog import ModelEntry
from planner.core.serving.hf_checkpoint import Format
from planner.core.serving.plan_formats import EngineOptions, engine_defaults
from planner.engines.hf_serving import HFServingEngine, NodeLaunch, model_path_for
from planner.engines.vllm import memory as vllm_memory
from planner.engines.vllm.command_line import parse_commands
from planner.engines.vllm.memory import ENGINE, layout_for


def serve_command(entry: ModelEntry, fmt: Format, gpus: int, nodes: int, ctx: int, opts: EngineOptions) -> list[str]:
    d = engine_defaults(ENGINE)
    layout, _ = layout_for(entry, fmt, gpus, nodes)
    cmd = ["vllm", "serve", model_path_for(fmt, entry, opts),
           "--tensor-parallel-size", str(layout.tp)]
    if layout.pp > 1:
        cmd += ["--pipeline-parallel-size", str(layout.pp), "--distributed-executor-backend", "ray"]
    cmd += ["--max-model-len", str(ctx)]
    if opts.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.kv_cache_dtype == "fp8":
        cmd += ["--kv-cache-dtype", "fp8"]
    if opts.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(opts.max_num_seqs)]
    if opts.served_model_name:
        cmd += ["--served-model-name", opts.served_model_name]
    if entry.hparams.arch == "deepseek2":
        cmd += ["--trust-remote-code"]
    cmd += ["--host", opts.host, "--port", str(opts.port or d["port"])]
    return cmd


def node_launches(entry: ModelEntry, fmt: Format, gpus: int, nodes: int, ctx: int,
                  opts: EngineOptions) -> list[NodeLaunch]:
    serve = serve_command(entry, fmt, gpus, nodes, ctx, opts)
    tp = layout_for(entry, fmt, gpus, nodes)[0].tp
    if nodes == 1:
        return [NodeLaunch(0, "single", [serve])]
    port = str(engine_defaults(ENGINE)["ray_port"])
    head = opts.head_address
    out = [NodeLaunch(0, "head", [
        ["ray", "start", "--head", f"--node-ip-address={head}", f"--port={port}"],
        serve,
    ], notes=[f"order: the head's ray start, then every worker's, then vllm serve once `ray status` lists "
              f"{tp * nodes} GPUs (the exported script waits for them); set VLLM_HOST_IP to each node's own "
              "address where nodes have several network interfaces"], wait_gpus=tp * nodes)]
    for n in range(1, nodes):
        out.append(NodeLaunch(n, "worker", [["ray", "start", "--block", f"--address={head}:{port}"]]))
    return out


ENGINE_IMPL = HFServingEngine(ENGINE, "vLLM", vllm_memory.fit, node_launches, parse_commands,
                              frozenset({"gpu_memory_utilization"}))
