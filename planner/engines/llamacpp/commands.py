"""The llama.cpp launch recipe of a plan, as text: quantize with the scheme, then serve as planned.

Printed by `dq-planner --headless --print-commands` for the recommended scheme; no binary is needed to
print it. The llama-server line is explicit (-ngl, -ts in whole layers per device, -c, -fa, -ctk/-ctv,
-np, --n-cpu-moe, --rpc, --fit off), so llama.cpp places exactly what was planned.
"""

from __future__ import annotations

import re

from planner.core.llamacpp.rpc_nodes import NodeDevice, node_devices
from planner.core.plan import Plan, PlanRequest
from planner.engines.llamacpp.argv import ServerOptions, parse_rpc_list, rpc_server_argv, server_argv, shell_line
from planner.safe_text import printable


def launch_lines(plan: Plan, req: PlanRequest, scheme_id: str) -> list[str]:
    sp = plan.scheme(scheme_id)
    # names from a GGUF header, a recipe or a profile: no control character reaches a comment line
    # (a newline there would start a command) nor a file name
    name, sid = printable(plan.model.name), printable(scheme_id)
    gguf = f"{name}-{sid}.gguf"
    hw = plan.hardware
    where = (f"{hw.nodes} x {hw.gpus} x {printable(hw.name or hw.device)}" if hw and hw.gpus else
             "the llama.cpp RPC devices and the host")
    lines = [f"# {name} {sid} on {where}, context {plan.context}" if hw else f"# {name} {sid}"]
    lines += conversion_lines(plan, name)
    q = ["dq-planner", "quantize", "--input", converted_name(plan, name), "--scheme", sid, "--output", gguf]
    if sp.requires_imatrix:
        q += ["--imatrix", "imatrix.gguf"]
        lines.append("#    this scheme needs an importance matrix (llama-imatrix) as --imatrix")
    lines.append(shell_line(q))
    others = other_nodes(plan, req)
    if others:
        lines.append(f"# 2. on each other node, first: an rpc-server per GPU (llama.cpp built with -DGGML_RPC=ON, "
                     "the head's version), NODEn_IP being that node's address:")
        for node in sorted({d.node for d in others}):
            lines += node_lines(node, [d for d in others if d.node == node])
        lines.append("# 3. then on node 0, serve it as planned (its --rpc devices are the other nodes' GPUs):")
    else:
        lines.append("# 2. serve it as planned (dq-planner serve also checks llama.cpp's memory lines against the plan):")
    argv = server_argv("llama-server", server_options(plan, req, scheme_id, gguf))
    argv[argv.index("-m") + 1] = gguf          # keep the name relative, as the user will place it
    lines.append(shell_line(argv))
    return lines


def _entry(plan: Plan):
    from planner.core.catalog import catalog

    return catalog().get(plan.model.id)


def converted_name(plan: Plan, name: str) -> str:
    """The file llama.cpp's converter writes, which llama-quantize reads."""
    e = _entry(plan)
    if e is not None and e.gguf_convert == "release":
        return f"{name}-release.gguf"
    return f"{name}-{(e.gguf_source_type if e is not None else 'bf16').upper()}.gguf"


def conversion_lines(plan: Plan, name: str) -> list[str]:
    """Step 1 of the recipe, as the model's profile says llama.cpp's converter writes it (gguf_convert):
    every tensor in --outtype, or the release's own types whatever --outtype says (then no --outtype)."""
    e = _entry(plan)
    out = converted_name(plan, name)
    if e is not None and e.gguf_convert == "release":
        return [f"# 1. convert the release as it is (llama.cpp's convert_hf_to_gguf.py writes {name}'s own types "
                f"whatever --outtype says: {e.gguf_convert_writes}):",
                f"#    python convert_hf_to_gguf.py {name} --outfile {out}",
                "#    then:"]
    t = e.gguf_source_type if e is not None else "bf16"
    return [f"# 1. a {name} GGUF in {t} (llama.cpp's convert_hf_to_gguf.py --outtype {t}), then:"]


def other_nodes(plan: Plan, req: PlanRequest) -> list[NodeDevice]:
    """The GPUs of the nodes other than the head, which the plan places as RPC devices."""
    mem = plan.scheme(plan.schemes[0].id).memory if plan.schemes else None
    if req.nodes <= 1 or plan.hardware is None or plan.hardware.source != "profile" or mem is None:
        return []
    labels = {d.device for d in mem.per_device}
    backend = re.sub(r"[0-9]+$", "", mem.per_device[-1].device)
    devices = node_devices(req.nodes, plan.hardware.gpus, backend)
    return devices if all(d.label in labels for d in devices) else []


def node_lines(node: int, devices: list[NodeDevice]) -> list[str]:
    """Node `node`'s commands: an rpc-server per GPU, each on its own port, in the background."""
    out = [f"# node {node}:"]
    for d in devices:
        out.append(shell_line(rpc_server_argv("rpc-server", d.port, host="0.0.0.0", devices=d.device)) + " &")
    out.append("wait")
    return out


def server_options(plan: Plan, req: PlanRequest, scheme_id: str, model_file: str, *, host: str = "0.0.0.0",
                   port: int = 8080, threads: int | None = None) -> ServerOptions:
    """llama-server's options for the planned placement of a scheme: every layer, split and expert flag."""
    sp = plan.scheme(scheme_id)
    mem = sp.memory
    n_layer = max((max(d.layers) for d in (mem.per_device if mem else []) if d.layers), default=-1)
    split = [float(len(d.layers)) for d in mem.per_device] if mem and len(mem.per_device) > 1 else None
    ngl = (len([il for d in mem.per_device for il in d.layers]) if mem else 0) if req.ngl is None else req.ngl
    return ServerOptions(
        model_file=model_file, ctx=req.ctx, n_gpu_layers=ngl if n_layer >= 0 else 0, tensor_split=split,
        flash_attn=req.flash_attn, cache_type_k=req.cache_type_k, cache_type_v=req.cache_type_v,
        parallel=req.parallel, kv_unified=req.kv_unified, ubatch=req.ubatch, batch=req.batch,
        n_cpu_moe=sp.n_cpu_moe if sp.n_cpu_moe is not None else (0 if req.n_cpu_moe == "auto" else req.n_cpu_moe),
        override_tensors=list(req.tensor_overrides) or None, main_gpu=req.main_gpu,
        split_mode=req.split_mode, op_offload=req.op_offload,
        rpc=parse_rpc_list(list(req.rpc) + [d.endpoint for d in other_nodes(plan, req)]) or None, host=host,
        port=port, threads=threads,
        verbosity=None)
