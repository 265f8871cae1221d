"""build_plan: a PlanRequest and its resolved inputs in, a Plan out. The one place where sizing, memory
and accuracy meet.

The caller resolves the inputs (planner.make_plan does it for the CLI, the TUI and the commands): the
engine object (planner.engines.registry), the model (a catalog or Hugging Face entry, or the model a GGUF
header describes) and the devices detection found. The core detects nothing, reads no GGUF and names no
engine.
"""

from __future__ import annotations

from dataclasses import replace

from planner.core.accuracy import tables as acc
from planner.core.accuracy.recommend import no_fit, recommend, recommend_across_models
from planner.core.accuracy.scores import scheme_scores
from planner.core.devices.hardware import LocalDevices, resolve_hardware
from planner.core.engine import Engine, ModelInput
from planner.core.plan import Plan, PlanRequest
from planner.core.request_bounds import check_request_bounds
from planner.errors import PlannerError


def build_plan(req: PlanRequest, engine: Engine, model: ModelInput, local: LocalDevices | None = None,
               shared: dict | None = None) -> Plan:
    """The whole plan of one model: the engine's schemes and memory, accuracy, the recommendation.

    shared: a dict kept across the plans of one request that differ only in the model (--model auto),
    through which the engine reuses the figures of models of the same layout (Engine.plan)."""
    check_request_bounds(req)
    acc.get_task(req.task)
    if model.file_model is not None and not engine.accepts_model_file:
        raise PlannerError(f"--model-file is a GGUF for llama.cpp; {engine.label} serves Hugging Face checkpoints "
                           "(use --model ID|DIR)")
    hw = resolve_hardware(req, local)
    plan = engine.plan(req, model, hw, shared)
    plan.notes += speed_basis_notes(plan, hw)
    if req.min_tps is not None:
        slow = [s for s in plan.schemes if s.speed is not None and s.speed.decode_tps < req.min_tps]
        if slow:
            plan.schemes = [s for s in plan.schemes if s not in slow]
            plan.notes.append(f"--min-tps {req.min_tps:g}: dropped " + ", ".join(
                f"{s.id} ({s.speed.decode_tps:.1f} tok/s predicted)" for s in slow))
        from planner.core.llamacpp.deployments import drop_slow

        slow_d = drop_slow(plan.schemes, req.min_tps)
        if slow_d:
            plan.notes.append(f"--min-tps {req.min_tps:g}: dropped deployments " + ", ".join(slow_d))
    proxies = []
    for sp in plan.schemes:
        view = scheme_scores(*sp.accuracy_key(plan.model.id), req.task)   # scored once; the ranking reads it too
        sp.accuracy = replace(view.accuracy) if view.accuracy is not None else None   # the plan's own copy
        # an unmeasured model's scheme may show a measured model's figure, labelled, never ranked
        px = view.proxy
        if px is not None:
            sp.notes.append(px.label)
            proxies.append((sp.id, px))
    if proxies:
        plan.notes.append(f"accuracy proxies, not measurements of {plan.model.id} (never ranked): " + "; ".join(
            f"{sid} on {px.measured_model} {px.accuracy.weighted_avg if px.accuracy.weighted_avg is not None else px.accuracy.task_score:.2f}"
            + (f" (drop {px.accuracy.drop_pct:.2f}% vs {px.accuracy.baseline})" if px.accuracy.drop_pct is not None else "")
            for sid, px in proxies) + f"; {proxies[0][1].why}")
    trained = (model.file_model or model.entry).hparams.n_ctx_train if (model.file_model or model.entry) else 0
    if trained and req.ctx > trained:
        plan.notes.append(f"context {req.ctx:,} is above the {trained:,} tokens {plan.model.id} was trained for: "
                          "planned as asked, but quality past the trained context is not measured "
                          "(llama.cpp warns about it too)")
    plan.recommendation = recommend(plan, req.task)
    if plan.recommendation is None and plan.hardware is not None:
        plan.no_fit = no_fit(plan)
    return plan


def speed_basis_notes(plan: Plan, hw) -> list[str]:
    """What the predicted speeds rest on where it is not the devices' own profile: none predicted for a
    profile without a bandwidth figure, RPC devices timed with the profile's figures."""
    prof = hw.profile
    if prof is None:
        return []
    out = []
    planned = [s for s in plan.schemes if s.memory is not None]
    if planned and all(s.speed is None for s in planned) and prof.bandwidth_gbs <= 0:
        out.append(f"no speed predicted: the {prof.id} profile ({prof.name}) has no memory bandwidth figure")
    rpc = [s.label for s in hw.slots if s.label.startswith("RPC[")]
    if rpc and any(s.speed is not None for s in planned):
        out.append(f"the RPC device(s) {', '.join(rpc)} are timed as {prof.name} ({prof.bandwidth_gbs:g} GB/s, "
                   f"{prof.bf16_tflops:g} TFLOPS, the --device profile) behind the network link of "
                   "profiles/speed/llamacpp.toml; their real hardware is not known to the plan")
    return out


def auto_models() -> list[str]:
    """The models --model auto compares: every catalog model but the superseded ones (a profile's
    `auto = false`), those with measured accuracy first (they are ranked; the others, e.g. V3.2 and
    V4-Flash with only their full-precision card scores, are planned and listed with why they are not
    ranked)."""
    from planner.core import catalog as cat

    models = cat.catalog()
    measured = [m for m in acc.models_with_accuracy() if m in models]
    return measured + [m for m, e in models.items() if m not in measured and e.in_auto]


def combine_auto(plans: list[Plan], task: str) -> tuple[Plan, list[Plan]]:
    """--model auto (the paper's second question): one plan per candidate model on the same hardware and
    context; the returned plan is the recommended model's, with the cross-model recommendation."""
    if not plans:
        raise PlannerError("--model auto: no model with measured accuracy to compare")
    rec = recommend_across_models(plans, task)
    chosen = next((p for p in plans if rec and p.model.id == rec.model), plans[0])
    chosen.recommendation = rec
    chosen.notes.append(f"--model auto compared {len(plans)} models: {', '.join(p.model.id for p in plans)}")
    return chosen, plans
