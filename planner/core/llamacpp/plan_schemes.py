"""llama.cpp's plan of a request: GGUF tensors per scheme, KV mode and layout, memory per device."""

from __future__ import annotations

from planner.core.engine import ModelInput
from dataclasses import replace

from planner.core.devices.hardware import Hardware
from planner.core.llamacpp.deployments import as_hybrid
from planner.core.llamacpp.file_schemes import catalog_scheme_of
from planner.core.llamacpp.fit import fewest_cpu_moe, fewest_devices, max_context
from planner.core.llamacpp.rpc_nodes import with_rpc_nodes
from planner.core.llamacpp.memory import LayerWeights, MemoryOptions, plan_memory
from planner.core.llamacpp.schemes import Scheme, ids_for, resolve_scheme
from planner.core.llamacpp.sizing import ResolvedModel, resolve_catalog_model, size_file, size_scheme
from planner.core.llamacpp.serving import scheme_serving
from planner.core.llamacpp.speed import predict_llamacpp
from planner.core.llamacpp.type_rules import QuantizeRefused, check_imatrix_use
from planner.core.plan import ModelSummary, Plan, PlanRequest
from planner.errors import PlannerError

KV_MODES = ("mla", "mla-kv", "legacy")
LAYOUTS = ("mla", "legacy")
FILE_PREFIX = "file:"       # the id of a GGUF file planned as it is, when a scheme of the same name is planned too


def resolve_layout(req: PlanRequest, arch: str) -> tuple[str | None, str | None]:
    """(layout, kv_mode) for the request; only deepseek2 has layouts and KV modes."""
    if req.kv_mode is not None and req.kv_mode not in KV_MODES:
        raise PlannerError(f"unknown --kv-mode '{req.kv_mode}'; valid: {', '.join(KV_MODES)}")
    if req.layout is not None and req.layout not in ("mla", "legacy"):
        raise PlannerError(f"unknown --layout '{req.layout}'; valid: mla, legacy")
    if arch == "deepseek32":
        # llama.cpp: "DEEPSEEK32 architecture requires MLA" (one layout, the latent cache)
        if req.kv_mode not in (None, "mla") or req.layout not in (None, "mla"):
            raise PlannerError("deepseek32 runs on the MLA path only: drop --kv-mode/--layout (or use mla)")
        return None, None
    if arch == "deepseek4":
        # one layout and one cache (the sliding window plus the compressed caches): nothing to choose
        if req.kv_mode is not None or req.layout is not None:
            raise PlannerError("deepseek4 has one GGUF layout and one KV cache: drop --kv-mode/--layout")
        return None, None
    if arch != "deepseek2":
        return None, None
    kv_mode = req.kv_mode
    layout = req.layout
    if kv_mode is None:
        kv_mode = "legacy" if layout == "legacy" else "mla"
    if layout is None:
        layout = "legacy" if kv_mode == "legacy" else "mla"
    if kv_mode == "legacy" and layout != "legacy":
        raise PlannerError("--kv-mode legacy needs the legacy layout (one attn_kv_b); drop --layout mla")
    if layout == "legacy" and kv_mode != "legacy":
        raise PlannerError("a legacy-layout GGUF (attn_kv_b) runs on llama.cpp's non-MLA path: use --kv-mode legacy")
    return layout, kv_mode


def resolve_model(req: PlanRequest, model: ModelInput) -> tuple[ResolvedModel, str | None]:
    """The model with its tensors (catalog/HF entry, or the GGUF header's model) and the resolved KV mode."""
    if model.file_model is not None:
        fm = model.file_model
        _, kv_mode = resolve_layout(PlanRequest(kv_mode=req.kv_mode, layout=fm.layout), fm.hparams.arch)
        return fm, kv_mode
    if model.entry is None:
        raise PlannerError("no model to plan: name one with --model or --model-file")
    layout, kv_mode = resolve_layout(req, model.entry.hparams.arch)
    return resolve_catalog_model(model.entry, layout), kv_mode


def schemes_for(req: PlanRequest, model: ResolvedModel) -> list[Scheme]:
    """The requested schemes (each checked against the architecture), else every one that applies;
    none for a GGUF file planned as it is."""
    if req.schemes:
        out = []
        for s in req.schemes:
            sch = resolve_scheme(s)
            if not sch.applies_to(model.hparams.arch):
                raise PlannerError(
                    f"scheme {sch.id} is a recipe for {', '.join(sch.architectures)}, not {model.hparams.arch}")
            out.append(sch)
        return out
    if model.file_scheme:
        return []
    return [resolve_scheme(s) for s in ids_for(model.hparams.arch)]


def memory_options(req: PlanRequest, kv_mode: str | None, host_capacity: int = 0,
                   backend: str = "CPU") -> MemoryOptions:
    # --flash-attn auto: current llama.cpp turns flash attention on wherever the backend has kernels for
    # the model's head sizes; CUDA, ROCm, Metal, Vulkan and CPU have them for deepseek2 (576/512 MLA,
    # 192/128 legacy) and for 128-wide heads, so auto is planned as on.
    return MemoryOptions(
        ctx=req.ctx, kv_mode=kv_mode, cache_type_k=req.cache_type_k, cache_type_v=req.cache_type_v,
        flash_attn=req.flash_attn != "off", parallel=req.parallel, ubatch=req.ubatch, batch=req.batch,
        ngl=req.ngl, n_cpu_moe=0 if req.n_cpu_moe == "auto" else req.n_cpu_moe,
        tensor_split=tuple(req.tensor_split) if req.tensor_split else None, host_capacity_bytes=host_capacity,
        tensor_overrides=tuple(override_rule(r) for r in req.tensor_overrides), main_gpu=req.main_gpu,
        split_mode=req.split_mode, backend=backend, op_offload=req.op_offload,
        kv_unified=req.kv_unified,
    )


def override_rule(text: str) -> tuple[str, str]:
    """One -ot value PATTERN=BUFFER (llama.cpp splits at the first '=')."""
    pat, sep, buft = text.partition("=")
    if not sep or not pat or not buft:
        raise PlannerError(f"-ot needs PATTERN=BUFFER (e.g. 'exps=CPU'), got '{text}'")
    return pat, buft


def plan_gguf(req: PlanRequest, model_input: ModelInput, hw: Hardware, shared: dict | None = None) -> Plan:
    """llama.cpp's plan: each scheme's tensors under llama-quantize's rules (or the GGUF file as it is),
    placed on the devices as llama.cpp places them, with KV cache and compute buffers per device.

    shared (Engine.plan): the scheme plans of models already planned for this request, by what they
    depend on: the tensors (names, shapes, source types), the hyperparameters and the layout. A model
    equal in all of those gets copies of the same figures (its own accuracy is attached later)."""
    model, kv_mode = resolve_model(req, model_input)
    hw = with_rpc_nodes(hw, req)       # several nodes: the other nodes' GPUs are llama.cpp RPC devices
    summary = ModelSummary(id=model.id, name=model.name, architecture=model.hparams.arch,
                           params=model.params, layout=model.layout, source=model.source)
    key = None
    if shared is not None and model.file_path is None:
        key = ("llama.cpp scheme plans", model.hparams, model.layout, kv_mode, tuple(model.tensors))
        if key in shared:
            plans = [replace(sp, notes=list(sp.notes)) for sp in shared[key]]
            return Plan(model=summary, engine=req.engine, hardware=hw.summary, context=req.ctx, kv_mode=kv_mode,
                        schemes=plans)
    schemes = schemes_for(req, model)
    opts = memory_options(req, kv_mode, hw.host_capacity_bytes, hw.profile.backend if hw.profile else "CPU")
    plans = []
    for s in schemes:
        try:
            sp = size_scheme(model, s, req.imatrix)
            if sp.requires_imatrix or req.imatrix:
                check_imatrix_use(sp.tensors, s.ftype, model.hparams.arch, model.hparams.n_out_groups)
            plans.append(sp)
        except QuantizeRefused:
            if req.schemes:         # named: say why; every scheme: only those llama-quantize can make
                raise
    if model.file_scheme:
        file_plan = size_file(model)
        same = catalog_scheme_of(model)
        if same is not None:
            file_plan.measured_as = (same.model, same.scheme)
            file_plan.notes.append(f"every tensor's type is {same.scheme}'s for {same.model}: the file carries "
                                   f"{same.scheme}'s measured accuracy")
        if any(sp.id == file_plan.id for sp in plans):
            # scheme ids are unique within a plan: the file as it is, beside the scheme of the same name
            file_plan.id = FILE_PREFIX + file_plan.id
        plans.insert(0, file_plan)
    base_opts = opts
    for sp in plans:
        lw = sp.weights_by_layer or LayerWeights.of(model.hparams, sp.tensors)
        opts = base_opts
        if req.n_cpu_moe == "auto":
            n = fewest_cpu_moe(model.hparams, sp.tensors, hw.slots, opts, lw)
            sp.n_cpu_moe = n if n is not None else model.hparams.n_layer
            opts = replace(opts, n_cpu_moe=sp.n_cpu_moe)
            if n is None:
                sp.notes.append("--n-cpu-moe auto: no count of expert layers in host RAM makes it fit")
        sp.memory = plan_memory(model.hparams, sp.tensors, hw.slots, opts, lw)
        sp.memory.fewest_devices = fewest_devices(model.hparams, sp.tensors, hw.slots, opts, lw,
                                                  full=None if opts.tensor_split else sp.memory)
        if req.max_context:
            sp.memory.max_context = max_context(model.hparams, sp.tensors, hw.slots, opts, lw)
        sp.speed = predict_llamacpp(model.hparams, sp, opts, hw, req)
        from planner.core.llamacpp.deployments import scheme_deployments   # GPU-only and hybrid (issue 13)
        sp.deployments = scheme_deployments(model.hparams, sp, hw.slots, opts, lw,
                                            lambda s, o: predict_llamacpp(model.hparams, s, o, hw, req))
        unchecked = next((d for d in sp.deployments if d.placement == "hybrid" and d.fits and not d.host_ram_checked),
                         None)
        if unchecked is not None:
            sp.notes.append(f"hybrid (--n-cpu-moe {unchecked.n_cpu_moe}) fits the devices with "
                            f"{unchecked.host_bytes / 2**30:.1f} GiB in host RAM, not ranked: the host's RAM is "
                            f"unknown (--host-ram GIB)")
    if req.n_cpu_moe == 0 and not req.tensor_overrides:
        for sp in as_hybrid(plans):         # one deployment per row: the one the recommendation ranks
            lw = sp.weights_by_layer or LayerWeights.of(model.hparams, sp.tensors)
            oh = replace(base_opts, n_cpu_moe=sp.n_cpu_moe)
            sp.memory.fewest_devices = fewest_devices(model.hparams, sp.tensors, hw.slots, oh, lw,
                                                      full=None if oh.tensor_split else sp.memory)
            if req.max_context:
                sp.memory.max_context = max_context(model.hparams, sp.tensors, hw.slots, oh, lw)
    for sp in plans:                        # the deployment each row describes, under the request's load
        sp.serving = scheme_serving(sp, req)
    if key is not None:
        shared[key] = [replace(sp, notes=list(sp.notes)) for sp in plans]
    return Plan(model=summary, engine=req.engine, hardware=hw.summary, context=req.ctx, kv_mode=kv_mode,
                schemes=plans)

