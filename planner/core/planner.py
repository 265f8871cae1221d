"""make_plan: a PlanRequest in, a Plan out. The one place where sizing, memory and accuracy meet."""

from __future__ import annotations

from planner.core import accuracy as acc
from planner.core import catalog as cat
from planner.core.recommend import explain_no_fit, recommend, recommend_across_models
from planner.core.fit import fewest_devices, max_context
from planner.core.hardware_plan import resolve_hardware
from planner.core.memory import LayerWeights, MemoryOptions, plan_memory
from planner.core.plan import ModelSummary, Plan, PlanRequest
from planner.core.schemes import Scheme, ids_for, resolve_scheme
from planner.core.sizing import ResolvedModel, resolve_catalog_model, size_file, size_scheme
from planner.errors import PlannerError

KV_MODES = ("mla", "mla-kv", "legacy")
ENGINES = ("llama.cpp", "vllm", "sglang")


def resolve_layout(req: PlanRequest, arch: str) -> tuple[str | None, str | None]:
    """(layout, kv_mode) for the request; only deepseek2 has layouts and KV modes."""
    if req.kv_mode is not None and req.kv_mode not in KV_MODES:
        raise PlannerError(f"unknown --kv-mode '{req.kv_mode}'; valid: {', '.join(KV_MODES)}")
    if req.layout is not None and req.layout not in ("mla", "legacy"):
        raise PlannerError(f"unknown --layout '{req.layout}'; valid: mla, legacy")
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


def resolve_model(req: PlanRequest) -> tuple[ResolvedModel, str | None]:
    """The model with its tensors (catalog, HF folder or GGUF header) and the resolved KV mode."""
    if req.model_file:
        from planner.gguf.model import model_from_gguf

        model = model_from_gguf(req.model_file)
        _, kv_mode = resolve_layout(
            PlanRequest(kv_mode=req.kv_mode, layout=model.layout), model.hparams.arch)
        return model, kv_mode
    entry = cat.resolve_model(req.model)
    layout, kv_mode = resolve_layout(req, entry.hparams.arch)
    return resolve_catalog_model(entry, layout), kv_mode


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


def memory_options(req: PlanRequest, kv_mode: str | None, host_capacity: int = 0) -> MemoryOptions:
    # --flash-attn auto: current llama.cpp turns flash attention on wherever the backend has kernels for
    # the model's head sizes; CUDA, ROCm, Metal, Vulkan and CPU have them for deepseek2 (576/512 MLA,
    # 192/128 legacy) and for 128-wide heads, so auto is planned as on.
    return MemoryOptions(
        ctx=req.ctx, kv_mode=kv_mode, cache_type_k=req.cache_type_k, cache_type_v=req.cache_type_v,
        flash_attn=req.flash_attn != "off", parallel=req.parallel, ubatch=req.ubatch, batch=req.batch,
        ngl=req.ngl, n_cpu_moe=req.n_cpu_moe,
        tensor_split=tuple(req.tensor_split) if req.tensor_split else None, host_capacity_bytes=host_capacity,
    )


def make_plan(req: PlanRequest, *, detection=None) -> Plan:
    """The whole plan. `detection` is what hardware detection found (None: detect when needed)."""
    if req.engine not in ENGINES:
        raise PlannerError(f"unknown engine '{req.engine}'; valid: {', '.join(ENGINES)}")
    if req.ctx < 1:
        raise PlannerError(f"--ctx must be at least 1, got {req.ctx}")
    if req.model == "auto":
        return make_auto_plan(req, detection=detection)[0]
    acc.get_task(req.task)
    if req.engine != "llama.cpp":
        plan = _engine_plan(req, detection)
    else:
        plan = _llama_cpp_plan(req, detection)
    for sp in plan.schemes:
        sp.accuracy = acc.accuracy_for(plan.model.id, sp.id, req.task)
    plan.recommendation = recommend(plan, req.task)
    if plan.recommendation is None and plan.hardware is not None:
        plan.notes += explain_no_fit(plan)
    return plan


def make_auto_plan(req: PlanRequest, *, detection=None) -> tuple[Plan, list[Plan]]:
    """--model auto (the paper's second question): every catalog model with measured accuracy on the
    same hardware and context; the returned plan is the recommended model's, with the cross-model
    recommendation; the list holds every candidate's plan."""
    from dataclasses import replace

    plans = [make_plan(replace(req, model=m, model_file=None, schemes=None), detection=detection)
             for m in acc.models_with_accuracy() if m in cat.catalog()]
    rec = recommend_across_models(plans, req.task)
    chosen = next((p for p in plans if rec and p.model.id == rec.model), plans[0])
    chosen.recommendation = rec
    chosen.notes.append(f"--model auto compared {len(plans)} models: {', '.join(p.model.id for p in plans)}")
    return chosen, plans


def _engine_plan(req: PlanRequest, detection) -> Plan:
    """vLLM / SGLang: Hugging Face checkpoint formats, tensor and pipeline parallel."""
    from planner.engines.hf_serving import plan_engine

    if req.model_file:
        raise PlannerError(f"--model-file is a GGUF for llama.cpp; {req.engine} serves Hugging Face checkpoints "
                           "(use --model ID|DIR)")
    entry = cat.resolve_model(req.model)
    hw = resolve_hardware(req, detection)
    schemes = plan_engine(req, entry, hw.profile, hw.summary.gpus, req.nodes)
    summary = ModelSummary(id=entry.id, name=entry.name, architecture=entry.hparams.arch,
                           params=schemes[0].params if schemes else 0, layout=None, source=entry.source)
    return Plan(model=summary, engine=req.engine, hardware=hw.summary, context=req.ctx, kv_mode=None,
                schemes=schemes)


def _llama_cpp_plan(req: PlanRequest, detection) -> Plan:
    model, kv_mode = resolve_model(req)
    schemes = schemes_for(req, model)
    hw = resolve_hardware(req, detection)
    opts = memory_options(req, kv_mode, hw.host_capacity_bytes)
    plans = []
    if model.file_scheme:
        plans.append(size_file(model))
    plans += [size_scheme(model, s, req.imatrix) for s in schemes]
    for sp in plans:
        lw = LayerWeights.of(model.hparams, sp.tensors)
        sp.memory = plan_memory(model.hparams, sp.tensors, hw.slots, opts, lw)
        sp.memory.fewest_devices = fewest_devices(model.hparams, sp.tensors, hw.slots, opts, lw,
                                                  full=None if opts.tensor_split else sp.memory)
        if req.max_context:
            sp.memory.max_context = max_context(model.hparams, sp.tensors, hw.slots, opts, lw)
    summary = ModelSummary(id=model.id, name=model.name, architecture=model.hparams.arch,
                           params=model.params, layout=model.layout, source=model.source)
    return Plan(model=summary, engine=req.engine, hardware=hw.summary, context=req.ctx, kv_mode=kv_mode,
                schemes=plans)

