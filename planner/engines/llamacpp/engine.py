"""llama.cpp as an engine (planner.core.engine.Engine): GGUF schemes planned by the core's llama.cpp
memory model (planner.core.llamacpp.plan_schemes), launched as llama-quantize + an explicit llama-server line."""

from __future__ import annotations

from planner.core.catalog import ModelEntry
from planner.core.devices.hardware import Hardware
from planner.core.engine import CommandRequest, Launch, ModelInput, Script
from planner.core.llamacpp.plan_schemes import plan_gguf
from planner.core.llamacpp.schemes import ids_for
from planner.core.plan import Plan, PlanRequest
from planner.engines.llamacpp.commands import launch_lines, node_lines, other_nodes


class LlamaCppEngine:
    name = "llama.cpp"
    label = "llama.cpp"
    accepts_model_file = True
    quantizes = True
    own_options = frozenset({
        "model_file", "quant", "rpc", "kv_mode", "layout", "cache_type_k", "cache_type_v", "flash_attn", "parallel",
        "ubatch", "batch", "ngl", "n_cpu_moe", "tensor_split", "tensor_overrides", "main_gpu", "split_mode",
        "imatrix", "host_ram", "host_bandwidth"})

    def scheme_ids(self, entry: ModelEntry) -> list[str]:
        return ids_for(entry.hparams.arch)

    def plan(self, req: PlanRequest, model: ModelInput, hardware: Hardware, shared: dict | None = None) -> Plan:
        return plan_gguf(req, model, hardware, shared)

    def launch(self, plan: Plan, req: PlanRequest, scheme_id: str) -> Launch:
        lines = launch_lines(plan, req, scheme_id)
        others = other_nodes(plan, req)
        if not others:
            return Launch(lines=lines, scripts=[Script("launch.sh", "#!/bin/sh\nset -eu\n" + "\n".join(lines) + "\n")])
        # several nodes: one script per node; the other nodes' rpc-servers start before the head's llama-server
        head = [x for x in lines if not x.startswith(("rpc-server ", "# node ", "wait", "# 2. on each other node"))]
        scripts = [Script("node0.sh", "#!/bin/sh\nset -eu\n# node 0 (head): start it once the other nodes' "
                          "rpc-servers are up\n" + "\n".join(head) + "\n")]
        for node in sorted({d.node for d in others}):
            body = node_lines(node, [d for d in others if d.node == node])
            scripts.append(Script(f"node{node}.sh", "#!/bin/sh\nset -eu\n# node " + str(node) + " (rpc): "
                                  + f"replace NODE{node}_IP in node0.sh with this node's address\n"
                                  + "\n".join(body[1:]) + "\n"))
        return Launch(lines=lines, scripts=scripts)

    def parse_command(self, commands: list[list[str]], base: PlanRequest) -> CommandRequest | None:
        from planner.engines.llamacpp.command_line import parse_commands

        return parse_commands(commands, base)


ENGINE_IMPL = LlamaCppEngine()
