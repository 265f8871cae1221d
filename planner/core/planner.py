"""make_plan: a PlanRequest in, a Plan out. The one place where sizing, memory and accuracy meet."""

from __future__ import annotations

from planner.core import catalog as cat
from planner.core.plan import ModelSummary, Plan, PlanRequest
from planner.core.schemes import Scheme, all_ids, resolve_scheme
from planner.core.sizing import ResolvedModel, resolve_catalog_model, size_file, size_scheme
from planner.errors import PlannerError

KV_MODES = ("mla", "mla-kv", "legacy")
ENGINES = ("llama.cpp", "vllm", "sglang")


def resolve_layout(req: PlanRequest, arch: str) -> tuple[str | None, str | None, list[str]]:
    """(layout, kv_mode, notes) for the request; only deepseek2 has layouts and KV modes."""
    notes: list[str] = []
    if req.kv_mode is not None and req.kv_mode not in KV_MODES:
        raise PlannerError(f"unknown --kv-mode '{req.kv_mode}'; valid: {', '.join(KV_MODES)}")
    if req.layout is not None and req.layout not in ("mla", "legacy"):
        raise PlannerError(f"unknown --layout '{req.layout}'; valid: mla, legacy")
    if arch != "deepseek2":
        return None, None, notes
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
    return layout, kv_mode, notes


def resolve_model(req: PlanRequest) -> tuple[ResolvedModel, str | None]:
    """The model with its tensors (catalog, HF folder or GGUF header) and the resolved KV mode."""
    if req.model_file:
        from planner.gguf.model import model_from_gguf

        model = model_from_gguf(req.model_file)
        _, kv_mode, _ = resolve_layout(
            PlanRequest(kv_mode=req.kv_mode, layout=model.layout), model.hparams.arch)
        return model, kv_mode
    entry = cat.resolve_model(req.model)
    layout, kv_mode, _ = resolve_layout(req, entry.hparams.arch)
    return resolve_catalog_model(entry, layout), kv_mode


def schemes_for(req: PlanRequest, model: ResolvedModel) -> tuple[list[Scheme], list[str]]:
    notes: list[str] = []
    if req.schemes:
        out = []
        for s in req.schemes:
            sch = resolve_scheme(s)
            if not sch.applies_to(model.hparams.arch):
                raise PlannerError(
                    f"scheme {sch.id} is a recipe for {', '.join(sch.architectures)}, not {model.hparams.arch}")
            out.append(sch)
        return out, notes
    if model.file_scheme:
        return [], notes
    out = []
    for sid in all_ids():
        sch = resolve_scheme(sid)
        if sch.applies_to(model.hparams.arch):
            out.append(sch)
    return out, notes


def make_plan(req: PlanRequest, *, detection=None) -> Plan:
    """The whole plan. `detection` is what hardware detection found (None: not looked)."""
    if req.engine not in ENGINES:
        raise PlannerError(f"unknown engine '{req.engine}'; valid: {', '.join(ENGINES)}")
    model, kv_mode = resolve_model(req)
    schemes, notes = schemes_for(req, model)
    plans = []
    if model.file_scheme:
        plans.append(size_file(model))
    plans += [size_scheme(model, s, req.imatrix) for s in schemes]
    summary = ModelSummary(id=model.id, name=model.name, architecture=model.hparams.arch,
                           params=model.params, layout=model.layout, source=model.source)
    return Plan(model=summary, engine=req.engine, hardware=None, context=req.ctx, kv_mode=kv_mode,
                schemes=plans, notes=notes)
