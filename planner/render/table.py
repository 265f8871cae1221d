"""Plain-text tables of a Plan for people (the headless default)."""

from __future__ import annotations

from planner.core.plan import Plan, Recommendation, SchemePlan

from planner.render import recommendation as rtext
from planner.render import serving as rserving
from planner.units import GiB, gb, human


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _fit_cell(s: SchemePlan) -> str:
    if s.fits is None:
        return "-"
    return "yes" if s.fits else "NO"


def render_plan(plan: Plan, with_tensors: bool = False) -> str:
    m = plan.model
    out = [f"{m.name} ({m.architecture}{', ' + m.layout + ' layout' if m.layout else ''}), "
           f"{m.params / 1e9:.1f}B parameters"]
    hw = plan.hardware
    if hw:
        devices = (f"{hw.nodes} x {hw.gpus} x {hw.name or hw.device} ({human(hw.memory_per_gpu_bytes)} each, "
                   f"{hw.source})" if hw.gpus else
                   f"no local GPUs: the llama.cpp RPC devices and the host (the smallest RPC device "
                   f"{human(hw.memory_per_gpu_bytes)})")
        out.append(f"Hardware: {devices}; context {plan.context}{', KV mode ' + plan.kv_mode if plan.kv_mode else ''}")
    for n in rtext.plan_notes(plan) + (hw.notes if hw else []):
        out.append(f"note: {n}")
    out.append("")
    rows = []
    rec0 = plan.recommendation
    acc_col = accuracy_column(plan)
    scored = acc_col is not None and acc_col[0] == "accuracy"
    for i, s in enumerate(plan.schemes):
        row = [s.id, f"{s.size_bytes / GiB:.2f}", gb(s.size_bytes), f"{s.bpw:.2f}"]
        if s.memory is not None:
            top = s.tightest_device
            row += [
                human(s.memory.kv_cache_bytes),
                human(top.total_bytes) if top else "-",
                human(s.headroom_bytes) if s.headroom_bytes is not None else "-",
                _fit_cell(s),
            ]
        if acc_col is not None:
            row.append(acc_col[1][i])
        rows.append(row)
    headers = ["scheme", "GiB", "GB", "bpw"]
    if any(s.memory is not None for s in plan.schemes):
        headers += ["KV cache", "tightest device", "headroom", "fits"]
    if acc_col is not None:
        headers.append(acc_col[0])
    rows = [r + [""] * (len(headers) - len(r)) for r in rows]
    if any(s.memory is not None and s.memory.max_context is not None for s in plan.schemes):
        headers.append("max context")            # --max-context: the largest context that fits
        for r, s in zip(rows, plan.schemes):
            mc = s.memory.max_context if s.memory is not None else None
            r.append(f"{mc:,}" if mc is not None else "-")
    speed = [s.speed for s in plan.schemes]
    if any(sp is not None for sp in speed):
        # predicted speed (planner/core/llamacpp/speed.py): prefill of --prompt tokens, decode at --depth,
        # and decode with the whole context cached where the plan's model gives it
        sp0 = next(sp for sp in speed if sp is not None)
        headers += [f"prefill t/s (prompt {sp0.prompt_tokens})", f"decode t/s (depth {sp0.depth_tokens})"]
        full = sp0.depth_tokens != plan.context and any(sp is not None and sp.decode_base_s > 0 for sp in speed)
        if full:
            headers.append(f"decode t/s (depth {plan.context})")
        for r, sp in zip(rows, speed):
            r += [f"{sp.prefill_tps:.1f}", f"{sp.decode_tps:.1f}"] if sp is not None else ["-", "-"]
            if full:
                r.append(f"{sp.decode_tps_at(plan.context):.1f}" if sp is not None and sp.decode_base_s > 0 else "-")
    if any(s.n_cpu_moe is not None for s in plan.schemes):
        headers.append("cpu-moe")
        for r, s in zip(rows, plan.schemes):
            r.append(str(s.n_cpu_moe) if s.n_cpu_moe is not None else "-")
    right = {1, 2, 3, 4, 5, 6, 8} | set(range(9, len(headers)))
    out.append(_table(headers, rows, right=right))
    if scored:
        out += ["", rtext.accuracy_basis(rec0)]
    st = rserving.serving_table(plan)
    if st is not None:
        out += ["", rserving.serving_heading(plan), _table(*st, right=set(range(1, len(st[0]))))]
    focus = None
    if plan.recommendation and any(s.id == plan.recommendation.scheme for s in plan.schemes):
        focus = plan.scheme(plan.recommendation.scheme)
    elif len(plan.schemes) == 1:
        focus = plan.schemes[0]
    rec = plan.recommendation
    if focus is not None and focus.memory is not None and focus.memory.per_device:
        out += ["", render_devices(focus)]
    if plan.recommendation:
        out += ["", *render_recommendation(plan.recommendation)]
        pick = next((s for s in plan.schemes if s.id == plan.recommendation.scheme), None)
        if rec.deployments and any(d.placement == "hybrid" for d in rec.deployments):
            out.append("Deployments that fit (GPU-only and hybrid), by measured accuracy:")
            out += [f"  {x}" for x in rtext.deployment_lines(rec)]
        if pick is not None and pick.speed is not None:
            out.append(f"Predicted speed of {pick.id}: {speed_text(pick)}")
    if focus is not None:
        out += rserving.serving_section(plan, focus)
    sla = rserving.sla_lines(plan.sla)
    if sla:
        out += ["", *sla]
    if with_tensors:
        for s in plan.schemes:
            out += ["", f"{s.id}: {len(s.tensors)} tensors"]
            out.append(_table(["name", "shape", "type", "bytes"],
                              [[t.name, "x".join(map(str, t.shape)), t.type, str(t.bytes)] for t in s.tensors],
                              right={3}))
    return "\n".join(out)


def speed_text(s: SchemePlan) -> str:
    """'23.0 tok/s decode at depth 0, 4950.8 tok/s prefill of 512 tokens (limited by CUDA0)': a scheme's
    predicted speed in words (the command line's and the workbench's)."""
    sp = s.speed
    return (f"{sp.decode_tps:.1f} tok/s decode at depth {sp.depth_tokens}, {sp.prefill_tps:.1f} tok/s prefill of "
            f"{sp.prompt_tokens} tokens (limited by {sp.bound})"
            + (f"; experts of {s.n_cpu_moe} layers in host RAM" if s.n_cpu_moe else ""))


def accuracy_column(plan: Plan) -> tuple[str, list[str]] | None:
    """The scheme table's accuracy column, (header, one cell per scheme), as every table shows it: the
    scores the recommendation ranks and quotes, once (their basis: rtext.accuracy_basis), else each
    scheme's weighted score. None: no scheme has accuracy figures."""
    rec = plan.recommendation
    if rec is not None and rec.suite is not None and any(e.score is not None for e in rec.ranked + rec.excluded):
        return "accuracy", [_accuracy_cell(rec, s.id) for s in plan.schemes]
    if not any(s.accuracy for s in plan.schemes):
        return None
    return "weighted acc.", [f"{s.accuracy.weighted_avg:.2f}" if s.accuracy is not None and s.accuracy.weighted_avg
                             is not None else "unmeasured" for s in plan.schemes]


def _accuracy_cell(rec: Recommendation, scheme_id: str) -> str:
    """The recommendation's score of a scheme; '*' marks one from another evaluation than its basis."""
    e = rec.entry(scheme_id)
    if e is None or e.score is None:
        return "unmeasured"
    return f"{e.score:.2f}" + ("" if e.suite == rec.suite else "*")


def render_recommendation(r: Recommendation) -> list[str]:
    """'Recommended: ...', its reasons and the alternatives (sentences from planner.render.recommendation)."""
    out = [f"Recommended: {r.model + ' ' if r.model else ''}{r.scheme}"]
    out += [f"  - {x}" for x in rtext.reasons(r)]
    alts = rtext.alternatives(r)
    if alts:
        out.append("Alternatives:")
        out += [f"  - {x}" for x in alts]
    return out


def render_type_bytes(s: SchemePlan) -> str:
    rows = [[t, human(b), f"{100 * b / s.size_bytes:.1f}%"] for t, b in sorted(s.type_bytes.items(), key=lambda kv: -kv[1])]
    return _table(["type", "bytes", "share"], rows, right={1, 2})


def render_candidates(candidates: list[Plan], chosen: Plan) -> str:
    """--model auto: each model's own recommended measured scheme (the one the cross-model ranking
    compares), then the recommendation."""
    rows = []
    for p in candidates:
        fitting = [s for s in p.schemes if s.fits]
        r = p.recommendation
        best = r.pick if r is not None and r.basis != "unmeasured" else None
        rows.append([p.model.id, f"{p.model.params / 1e9:.1f}B", str(len(fitting)),
                     best.scheme if best else "-",
                     f"{best.score:.2f}" if best and best.score is not None else "-",
                     best.suite or "-" if best else "-",
                     human(best.headroom_bytes) if best and best.headroom_bytes is not None else "-"])
        sp = next((x for x in p.schemes if best and x.id == best.scheme), None)
        rows[-1] += [f"{sp.speed.decode_tps:.1f}" if sp is not None and sp.speed is not None else "-",
                     str(sp.n_cpu_moe) if sp is not None and sp.n_cpu_moe is not None else "-"]
    hw = chosen.hardware
    out = [f"--model auto on {hw.nodes} x {hw.gpus} x {hw.name or hw.device}, context {chosen.context}" if hw else "",
           "", _table(["model", "params", "schemes that fit", "best measured", "score", "suite", "headroom",
                       "decode t/s", "cpu-moe"], rows, right={1, 2, 4, 6, 7, 8})]
    r = chosen.recommendation
    if r:
        out += ["", *render_recommendation(r)]
    else:
        out += ["", "Nothing measured fits this hardware."] + [f"  - {n}" for n in chosen.notes]
    return "\n".join(out)


def render_comparison(ranked, workload: str) -> str:
    """--compare: deployments across engines, best first, with the reasons."""
    rows = [[str(r.rank), r.candidate.label, "yes" if r.fits else "NO",
             str(r.candidate.max_sequences) if r.candidate.max_sequences is not None else "-",
             f"{r.candidate.accuracy:.2f}" if r.candidate.accuracy is not None else "unmeasured"] for r in ranked]
    out = [f"Deployments ranked for {workload}:", "",
           _table(["#", "deployment", "fits", "sequences", "accuracy"], rows, right={0, 3, 4}), ""]
    for r in ranked:
        out.append(f"{r.rank}. {r.candidate.label}")
        out += [f"   - {x}" for x in r.reasons]
    return "\n".join(out)


_PARTS = (("weights", "weights_bytes"), ("KV cache", "kv_bytes"), ("compute", "compute_bytes"),
          ("reserve", "overhead_bytes"))


def render_devices(s: SchemePlan) -> str:
    """Per device: each component, the total against capacity, and what dominates it."""
    m = s.memory
    devs = list(m.per_device) + ([m.host] if m.host and m.host.total_bytes else [])
    rows = []
    for d in devs:
        parts = [(label, getattr(d, attr)) for label, attr in _PARTS]
        top, top_b = max(parts, key=lambda kv: kv[1])
        share = f"{top} {100 * top_b / d.total_bytes:.0f}%" if d.total_bytes else "-"
        cap = human(d.capacity_bytes) if d.capacity_bytes else "-"
        free = human(d.headroom_bytes) if d.capacity_bytes else "-"
        rows.append([d.device, str(len([x for x in d.layers])), *(human(b) for _, b in parts), human(d.total_bytes),
                     cap, free, share])
    head = f"{s.id} per device (layers include the output layer; reserve = runtime context; host = token_embd and buffers):"
    return head + "\n" + _table(["device", "layers", "weights", "KV cache", "compute", "reserve", "total", "capacity",
                                  "free", "dominated by"], rows, right={1, 2, 3, 4, 5, 6, 7, 8})
