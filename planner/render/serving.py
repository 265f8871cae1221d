"""The serving figures in words and tables: a line per scheme, the chosen scheme's section, the
service-level search's answer (planner.core.plan.Serving, SlaSearch; the core computes, this writes)."""

from __future__ import annotations

from planner.core.plan import Plan, SchemePlan, Serving, SlaDeployment, SlaSearch


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def _per_user(tpot_s: float) -> str:
    return f"{1.0 / tpot_s:.1f}" if tpot_s > 0 else "-"


def serving_table(plan: Plan) -> tuple[list[str], list[list[str]]] | None:
    """(headers, rows): one row per scheme with serving figures at the request's concurrency."""
    served = [s for s in plan.schemes if s.serving is not None]
    if not served:
        return None
    headers = ["scheme", "TTFT", "TPOT", "tok/s per user", "tok/s all", "tok/s per GPU", "req/s",
               "max concurrency", "saturation req/s"]
    rows = []
    for s in served:
        v = s.serving
        rows.append([s.id, _ms(v.ttft_s), _ms(v.tpot_s), _per_user(v.tpot_s), f"{v.output_tps:.0f}",
                     f"{v.output_tps_per_gpu:.0f}", f"{v.requests_per_s:.2f}", f"{v.max_concurrency:,}",
                     f"{v.saturation.requests_per_s:.2f}"])
    return headers, rows


def serving_heading(plan: Plan) -> str | None:
    v = next((s.serving for s in plan.schemes if s.serving is not None), None)
    if v is None:
        return None
    return (f"Serving ({plan.engine}) at {v.concurrency} request(s) in flight, {v.prompt_tokens:,} prompt + "
            f"{v.gen_tokens:,} generated tokens each (--concurrency, --prompt, --gen):")


def serving_section(plan: Plan, sp: SchemePlan) -> list[str]:
    """The chosen scheme's serving figures in sentences."""
    v: Serving | None = sp.serving
    if v is None:
        return []
    out = [f"Serving {sp.id} with {plan.engine} on {v.gpus} GPU(s), {v.concurrency} request(s) in flight of "
           f"{v.prompt_tokens:,} + {v.gen_tokens:,} tokens: time to first token {_ms(v.ttft_s)}, "
           f"{_ms(v.tpot_s)} per output token ({_per_user(v.tpot_s)} tok/s per user), {v.output_tps:.0f} tok/s "
           f"in all ({v.output_tps_per_gpu:.0f} per GPU), {v.requests_per_s:.2f} requests/s; the step is "
           f"limited by {v.bound}."]
    sat = v.saturation
    out.append(f"  The KV cache the engine allocates holds {v.max_concurrency:,} such request(s) at once; at that "
               f"saturation point it serves {sat.requests_per_s:.2f} requests/s, {sat.output_tps:.0f} tok/s"
               + (f" (requests beyond it wait: --concurrency {v.concurrency} queues "
                  f"{v.concurrency - v.max_concurrency:,})" if v.concurrency > v.max_concurrency else "") + ".")
    return out


def _deployment(d: SlaDeployment) -> str:
    where = f"{d.nodes} node(s) x {d.gpus} GPU(s)" if d.nodes > 1 else f"{d.gpus_used} GPU(s)"
    return f"{d.engine} {d.scheme}, {d.layout} on {where}"


def _targets(s: SlaSearch) -> str:
    t = []
    if s.ttft_ms is not None:
        t.append(f"TTFT <= {s.ttft_ms:g} ms")
    if s.tpot_ms is not None:
        t.append(f"TPOT <= {s.tpot_ms:g} ms")
    return " and ".join(t)


def sla_lines(s: SlaSearch | None, limit: int = 5) -> list[str]:
    """The service-level search: which deployment to run and why, the next ones, or the nearest miss."""
    if s is None:
        return []
    out = [f"Service-level targets {_targets(s)}: {len(s.ranked)} of {s.considered} deployment(s) that fit meet "
           "them (each at the most requests in flight that still meet them)."]
    if not s.ranked:
        n = s.nearest
        if n is None or n.single is None:
            out.append("  Nothing that fits was planned with serving figures.")
            return out
        out.append(f"  Nothing meets them. Nearest: {_deployment(n)} reaches TTFT {_ms(n.single.ttft_s)} and "
                   f"TPOT {_ms(n.single.tpot_s)} with one request alone; relax the targets or add GPUs.")
        return out
    p = s.ranked[0]
    acc = ("unmeasured accuracy" if p.score is None else
           f"accuracy {p.score:.2f}" + (f" ({p.share_pct:.1f}% of its baseline)" if p.share_pct is not None else ""))
    out.append(f"  Run {_deployment(p)} with up to {p.point.concurrency:,} request(s) in flight: TTFT "
               f"{_ms(p.point.ttft_s)}, TPOT {_ms(p.point.tpot_s)}, {p.output_tps_per_gpu:.0f} output tok/s per GPU; "
               f"{acc}.")
    basis = "score" if s.basis == "suite" else "share of its table's baseline"
    out.append(f"  Why: among those that meet the targets, the best measured accuracy ({basis}; scores within the "
               "tie points are a tie) and, in that tie group, the most output tokens/s per GPU "
               "(planner/core/accuracy/recommend.py rank_sla).")
    for d in s.ranked[1:limit]:
        acc = "unmeasured" if d.score is None else f"{d.score:.2f}"
        out.append(f"  {d.rank}. {_deployment(d)}: {d.output_tps_per_gpu:.0f} tok/s per GPU at {d.point.concurrency:,} "
                   f"in flight, accuracy {acc} (tie group {d.tie_group or '-'})")
    return out
