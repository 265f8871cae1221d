"""From a request to a plan, for every caller (CLI, TUI, commands, benchmarks): resolve the inputs the
core needs, then let the core compute.

Inputs resolved here, above the core: the engine (planner.engines.registry), the model (a catalog id or
a Hugging Face folder's config.json; a GGUF header read with planner.gguf for --model-file) and the
devices (detection through planner.hardware when the request asks for the local devices). The core
(planner.core.build_plan.build_plan) receives them as values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from planner import model_files
from planner.core import catalog as cat
from planner.core.build_plan import auto_models, build_plan, combine_auto
from planner.core.devices.hardware import DEFAULT_DEVICE, LocalDevices, wants_local_devices
from planner.core.devices.profiles import resolve_device
from planner.core.engine import Engine, ModelInput
from planner.core.plan import Plan, PlanRequest
from planner.core.request_bounds import check_request_bounds
from planner.engines.compare import Candidate, candidate
from planner.engines.registry import engine
from planner.errors import PlannerError


@dataclass
class PlanInputs:
    engine: Engine
    model: ModelInput
    local: LocalDevices | None


def local_devices(req: PlanRequest, detection=None) -> LocalDevices | None:
    """The detected devices when the request asks for them (detection: a planner.hardware.detect.Detection;
    None: detect now, once per process); None when it names a profile or nothing was found (the core then
    plans its default profile and says so)."""
    if not wants_local_devices(req):
        return None
    from planner.hardware.detect import detect_hardware, hardware_for_plan

    det = detection if detection is not None else detect_hardware()
    found = hardware_for_plan(det)
    if found is None:
        return None
    return found.local_devices(int(getattr(det.host, "memory_total_bytes", 0) or 0))


def model_input(req: PlanRequest) -> ModelInput:
    from planner.remote import is_remote      # URLs: planner/remote and planner/gguf/remote.py, loaded only for them

    if req.model_file:
        if is_remote(req.model_file):
            from planner.gguf.model import model_from_header
            from planner.gguf.remote import read_remote_gguf

            return ModelInput(file_model=model_from_header(read_remote_gguf(req.model_file, req.quant)))
        if req.quant:
            raise PlannerError("--quant chooses a GGUF set of a hf:// or ms:// repository given as --model-file")
        from planner.gguf.model import model_from_gguf

        return ModelInput(file_model=model_from_gguf(req.model_file))
    if is_remote(req.model):
        from planner.remote.models import remote_model_entry

        return ModelInput(entry=remote_model_entry(req.model))
    return ModelInput(entry=model_files.resolve_model(req.model))


def resolve_inputs(req: PlanRequest, *, detection=None) -> PlanInputs:
    check_request_bounds(req)
    eng = engine(req.engine)
    model = model_input(req)
    return PlanInputs(engine=eng, model=model, local=local_devices(req, detection))


def with_host(req: PlanRequest, local: LocalDevices | None) -> PlanRequest:
    """The host as a device when the plan is for this machine (its detected devices, or --device host
    with detection on): its bandwidth and FLOPS measured by planner.hardware.host's cached probe, and
    for --device host its RAM (unless --host-ram gives it)."""
    here = local is not None or (req.device == "host" and not detection_off())
    if not here or req.host_probe is not None:
        return req
    from planner.hardware.host import host_info, probe_host_speed

    ram = req.host_ram
    if req.device == "host" and ram is None:
        ram = host_info().memory_total_bytes / (1 << 30)
    return replace(req, host_probe=probe_host_speed(), host_ram=ram)


def detection_off() -> bool:
    import os

    return os.environ.get("DQ_PLANNER_DETECT", "").strip().lower() in ("0", "no", "off", "false")


def _say_detection_off(req: PlanRequest, detection, plan: Plan) -> None:
    """With DQ_PLANNER_DETECT=0 nothing was looked for: the plan says that, not that nothing was found."""
    if detection is not None or not wants_local_devices(req) or not detection_off() or plan.hardware is None:
        return
    plan.hardware.notes[:] = [n.replace("no accelerators detected:", "accelerator detection is off "
                                        "(DQ_PLANNER_DETECT=0):") for n in plan.hardware.notes]


def make_plan(req: PlanRequest, *, detection=None) -> Plan:
    """The whole plan of a request (--model auto: the recommended model's, see make_auto_plan)."""
    if req.model == "auto" and not req.model_file:
        return make_auto_plan(req, detection=detection)[0]
    i = resolve_inputs(req, detection=detection)
    plan = build_plan(with_host(req, i.local), i.engine, i.model, i.local)
    _say_detection_off(req, detection, plan)
    if req.ttft_ms is not None or req.tpot_ms is not None:
        plan.sla = sla_search(req, plan, i)
    if i.model.entry is not None and not i.engine.accepts_model_file:
        from planner.remote import is_remote

        if is_remote(req.model):             # vLLM/SGLang: the published safetensors headers' exact bytes
            from planner.remote.models import add_checkpoint_notes

            add_checkpoint_notes(plan, req.model, i.model.entry)
    return plan


def make_auto_plan(req: PlanRequest, *, detection=None) -> tuple[Plan, list[Plan]]:
    """--model auto: every catalog model with measured accuracy on the same hardware and context; the
    returned plan is the recommended model's, the list holds every candidate's plan."""
    check_request_bounds(req)
    eng = engine(req.engine)
    local = local_devices(req, detection)
    req = with_host(req, local)
    plans = []
    shared: dict = {}           # R1, V3, V3-0324 and R1-0528 have the same tensors: sized once
    skipped: list[str] = []
    for m in auto_models():
        r = replace(req, model=m, model_file=None, schemes=None)
        try:
            plans.append(build_plan(r, eng, ModelInput(entry=cat.resolve_model(m)), local, shared))
        except PlannerError as e:     # an option this model does not take (deepseek32 has no legacy layout)
            skipped.append(f"{m} ({e})")
    chosen, plans = combine_auto(plans, req.task)
    for p in plans:
        _say_detection_off(req, detection, p)
    if skipped:
        chosen.notes.append("--model auto: not planned for this request: " + "; ".join(skipped))
    return chosen, plans


_SPEC = re.compile(r"^(?P<engine>[A-Za-z0-9_.\-]+):(?P<scheme>[A-Za-z0-9_.\-]+)@(?P<nodes>\d+)x(?P<gpus>\d+)"
                   r"(?:/(?P<device>[A-Za-z0-9_.\-]+))?$")


def candidates_from_specs(req: PlanRequest, specs: list[str]) -> list[Candidate]:
    """--compare ENGINE:SCHEME@NODESxGPUS[/DEVICE] ...: each deployment planned with the request's model,
    context and options (the device defaults to the request's, else the default profile)."""
    out = []
    for spec in specs:
        m = _SPEC.match(spec.strip())
        if not m:
            raise PlannerError(f"bad --compare '{spec}'; expected ENGINE:SCHEME@NODESxGPUS[/DEVICE], "
                               "e.g. vllm:FP8@2x8/h100 or llama.cpp:DQ3_K_M@1x8")
        engine(m["engine"])
        nodes, gpus = int(m["nodes"]), int(m["gpus"])
        if nodes < 1 or gpus < 1:
            raise PlannerError(f"--compare '{spec}': nodes and GPUs must be at least 1")
        device = m["device"] or (req.device if req.device not in (None, "auto") else DEFAULT_DEVICE)
        plan = make_plan(replace(req, engine=m["engine"], schemes=[m["scheme"]], nodes=nodes, gpus=gpus,
                                 device=device, device_file=None, model_file=None))
        out.append(candidate(plan, resolve_device(device), req.n_cpu_moe))
    return out


def _gpu_counts(n: int) -> list[int]:
    """The GPU counts per node the search plans: powers of two up to the node's, and the node's own."""
    out, g = [], 1
    while g < n:
        out.append(g)
        g *= 2
    return out + [n]


def sla_search(req: PlanRequest, plan: Plan, inputs: PlanInputs):
    """--ttft-ms / --tpot-ms: every deployment the planner can make on the request's hardware (each engine
    with serving figures, each format or scheme, 1, 2, 4 ... GPUs per node up to the planned ones, 1 up to
    --nodes nodes, SGLang's DP attention and expert parallelism on whole nodes for MoE models), each at the
    largest concurrency meeting the targets,
    ranked by planner.core.accuracy.recommend.rank_sla (accuracy tie groups, then output tokens/s per GPU);
    when none meets them, the nearest one."""
    from planner.core.accuracy.recommend import measured_score, nearest_sla, rank_sla
    from planner.core.plan import SlaDeployment, SlaSearch
    from planner.engine_ids import engine_names

    gpus = plan.hardware.gpus if plan.hardware is not None else 1
    found: dict[tuple, tuple[SlaDeployment, str | None]] = {}
    for name in engine_names():
        eng = engine(name)
        # engines with a memory fit of their own (vLLM, SGLang) plan every layout; the others the request's
        variants = [(req.gpus, req.nodes, req.dp_attention, req.ep_moe)]
        if hasattr(eng, "fit"):
            variants = [(g, n, False, False) for n in range(1, req.nodes + 1) for g in _gpu_counts(max(1, gpus))]
            hp = inputs.model.entry.hparams if inputs.model.entry is not None else None
            if hp is not None and hp.arch == "deepseek2" and hp.is_moe:
                # DP attention and expert parallelism matter where a MoE model spans many GPUs: on whole nodes
                variants += [(gpus, n, dp, ep) for n in range(1, req.nodes + 1)
                             for dp, ep in ((True, False), (False, True), (True, True))]
        for g, n, dp, ep in variants:
            r = replace(req, engine=name, gpus=g, nodes=n, dp_attention=dp, ep_moe=ep,
                        schemes=req.schemes if name == req.engine else None)
            if name == req.engine and (g, n, dp, ep) == (req.gpus, req.nodes, req.dp_attention, req.ep_moe):
                p = plan
            else:
                try:
                    p = build_plan(with_host(r, inputs.local), eng, inputs.model, inputs.local)
                except PlannerError:
                    continue
            for sp in p.schemes:
                sv = sp.serving
                if sv is None or not sp.fits:
                    continue
                layout = next((x for x in sp.notes if x.startswith("TP ")), "").split(" over ")[0]
                key = (name, sp.id, layout, n, sv.gpus)
                if key in found:
                    continue
                score, share, suite = measured_score(p.model.id, sp, req.task)
                single = sv.curve[0] if sv.curve else None
                found[key] = (SlaDeployment(engine=name, scheme=sp.id, gpus=g or 0, nodes=n, layout=layout or "-",
                                            gpus_used=sv.gpus, dp_attention="DP attention" in layout,
                                            ep="EP" in layout,
                                            point=sv.sla, single=single, max_concurrency=sv.max_concurrency,
                                            score=score, share_pct=share), suite)
    deps = [d for d, _ in found.values()]
    ranked, basis = rank_sla(deps, [s for _, s in found.values()])
    nearest = None if ranked else nearest_sla(deps, req.ttft_ms, req.tpot_ms)
    return SlaSearch(ttft_ms=req.ttft_ms, tpot_ms=req.tpot_ms, ranked=ranked, nearest=nearest,
                     considered=len(deps), basis=basis)
