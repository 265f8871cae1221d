"""The plan `serve` runs: the GGUF's own tensors and types, placed on the devices llama.cpp lists.

The memory model (planner.core.llamacpp.memory.plan_memory) is given the devices llama.cpp itself will use, in
its order (RPC devices first, then local GPUs; the CPU is the host), so that the explicit -ngl/-ts of the
command reproduce the plan's placement exactly: -ts is the number of layers the plan gives each device
(llama.cpp assigns layer il to the first device whose cumulative share exceeds il / n_offloaded, and
with shares in whole layers both sides compute the same float32 quotients).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner.core.llamacpp.memory import ROUTED_EXPERTS
from planner.core.plan import MemoryPlan, PlanRequest
from planner.engines.llamacpp.argv import RpcDevice, ServerOptions
from planner.engines.llamacpp.devices import ListedDevice, list_devices
from planner.engines.llamacpp.locate import LlamaCpp


@dataclass
class ServePlan:
    options: ServerOptions
    memory: MemoryPlan | None
    model_file: str
    scheme: str
    devices: list[ListedDevice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    host_mapped_bytes: int | None = None     # what llama.cpp's CPU_Mapped buffer(s) will span
    speed_inputs: tuple | None = None        # (hparams, tensors, memory options): the speed prediction's




def host_mapped_bytes(model_file: str, memory: MemoryPlan, n_layer: int, n_cpu_moe: int) -> int | None:
    """The size llama.cpp reports for its memory-mapped host buffer: per file, the byte range from the first
    to the last end of the tensors kept on the host (src/llama-model-loader.cpp get_mapping_range).

    The range can hold tensors of other devices, which are mapped but never read: llama.cpp's figure is
    address space, the plan's host weights are what is resident."""
    from planner.core.llamacpp.memory import tensor_layer
    from planner.gguf.header import read_gguf

    if memory.host is None:
        return None
    host_layers = set(memory.host.layers)
    h = read_gguf(model_file)
    spans: dict[int, tuple[int, int]] = {}
    for t in h.tensors:
        il = tensor_layer(t.name, n_layer)
        on_host = il < 0 or il in host_layers or (il < min(n_cpu_moe, n_layer) and ROUTED_EXPERTS.search(t.name))
        if not on_host:
            continue
        lo, hi = spans.get(t.shard, (t.offset, t.offset + t.bytes))
        spans[t.shard] = (min(lo, t.offset), max(hi, t.offset + t.bytes))
    return sum(hi - lo for lo, hi in spans.values())


def _host_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency
        return 0


def plan_serve(lc: LlamaCpp, req: PlanRequest, rpc: list[RpcDevice], *, host: str = "127.0.0.1",
               port: int = 8080, threads: int | None = None,
               devices: list[ListedDevice] | None = None) -> ServePlan:
    from planner.core.engine import ModelInput
    from planner.core.llamacpp.plan_schemes import memory_options, resolve_model
    from planner.core.llamacpp.memory import Slot, plan_memory
    from planner.core.llamacpp.sizing import size_file
    from planner.gguf.model import model_from_gguf

    model, kv_mode = resolve_model(req, ModelInput(file_model=model_from_gguf(req.model_file)))
    hp = model.hparams
    sp = size_file(model)
    notes: list[str] = []
    if devices is None:
        devices = list_devices(lc, rpc)
    mem_of = {d.endpoint: d.memory_bytes for d in rpc}
    slots = []
    for d in devices:
        cap = d.total_bytes
        if d.name.startswith("RPC"):
            given = mem_of.get(d.description.strip())
            if given is not None:
                cap = given
        slots.append(Slot(d.label, cap, 0, weight=float(d.free_bytes)))
    if req.gpus is not None:
        notes.append("--gpus is ignored by serve: it plans on the devices llama.cpp lists")
    if req.device not in (None, "auto"):
        notes.append(f"--device {req.device} is ignored by serve: it plans on the devices llama.cpp lists")
    backend = next((b for b in ("CUDA", "ROCm") if any(s.label.startswith(b) for s in slots)), "CPU")
    opts = memory_options(req, kv_mode, _host_memory(), backend)
    n_cpu_moe = req.n_cpu_moe
    if n_cpu_moe == "auto":
        # the fewest expert layers in host RAM that make it fit the listed devices
        from dataclasses import replace as _replace

        from planner.core.llamacpp.fit import fewest_cpu_moe

        found = fewest_cpu_moe(hp, sp.tensors, slots, opts)
        n_cpu_moe = found if found is not None else hp.n_layer
        opts = _replace(opts, n_cpu_moe=n_cpu_moe)
        notes.append(f"--n-cpu-moe auto: {n_cpu_moe}" + ("" if found is not None else " (nothing fits)"))
    memory = plan_memory(hp, sp.tensors, slots, opts)
    if n_cpu_moe == 0 and not req.tensor_overrides and hp.is_moe and slots and not memory.fits:
        # as the plan does (planner.core.llamacpp.deployments.as_hybrid): the hybrid deployment that fits
        from dataclasses import replace as _replace

        from planner.core.llamacpp.fit import fewest_cpu_moe

        found = fewest_cpu_moe(hp, sp.tensors, slots, opts)
        if found:
            n_cpu_moe = found
            opts = _replace(opts, n_cpu_moe=found)
            memory = plan_memory(hp, sp.tensors, slots, opts)
            notes.append(f"the devices alone do not hold it: the routed experts of the first {found} layers "
                         f"stay in host RAM (--n-cpu-moe {found})")
    if not slots:
        ngl = 0
        notes.append("llama.cpp lists no GPU or RPC device: everything runs on the CPU (host)")
    else:
        ngl = hp.n_layer + 1 if req.ngl is None else min(req.ngl, hp.n_layer + 1)
    split = None
    if len(slots) > 1:
        split = [float(len(d.layers)) for d in memory.per_device]
        if not any(split):
            split = None
    sp.memory = memory
    options = ServerOptions(
        model_file=req.model_file or "", ctx=req.ctx, n_gpu_layers=ngl, tensor_split=split,
        flash_attn=req.flash_attn, cache_type_k=req.cache_type_k, cache_type_v=req.cache_type_v,
        parallel=req.parallel, kv_unified=req.kv_unified, ubatch=req.ubatch, batch=req.batch, n_cpu_moe=n_cpu_moe,
        override_tensors=list(req.tensor_overrides) or None, main_gpu=req.main_gpu,
        split_mode=req.split_mode, rpc=rpc or None, host=host, port=port, threads=threads)
    mapped = host_mapped_bytes(req.model_file or "", memory, hp.n_layer, n_cpu_moe)
    return ServePlan(options, memory, req.model_file or "", sp.id, devices, notes + list(memory.notes), mapped,
                     speed_inputs=(hp, sp.tensors, opts))
