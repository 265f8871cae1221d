"""Plan -> Rich renderables for the TUI. Formatting only: every figure shown comes from the Plan."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from planner.core.plan import DeviceMemory, Plan, Recommendation, SchemePlan
from planner.render import recommendation as rtext
from planner.render.table import speed_text
from planner.units import GiB, gb, human

MEMORY_PENDING = "not in this plan yet (the memory model has not produced it)"


def fullest_device(sp: SchemePlan | None) -> DeviceMemory | None:
    """The tightest device (least headroom: SchemePlan.tightest_device), the one that decides whether
    it fits and whose free memory is shown. The old name is kept for the widgets."""
    return sp.tightest_device if sp is not None else None


def gib_value(n: int | float) -> float:
    return n / GiB


def fits_text(sp: SchemePlan) -> Text:
    if sp.fits is None:
        return Text("unknown: " + MEMORY_PENDING, style="italic")
    head = sp.headroom_bytes
    full = fullest_device(sp)
    if sp.fits:
        t = Text("yes", style="bold green")
        if head is not None and full is not None:
            t.append(f": {human(head)} free on the tightest device ({full.device}: "
                     f"{human(full.total_bytes)} of {human(full.capacity_bytes)})")
        return t
    t = Text("NO", style="bold red")
    if head is not None and head < 0 and full is not None:
        t.append(f": over by {human(-head)} on {full.device} ({human(full.total_bytes)} of "
                 f"{human(full.capacity_bytes)})")
    elif sp.memory is not None and sp.memory.host is not None and sp.memory.host.headroom_bytes < 0:
        t.append(f": host RAM over by {human(-sp.memory.host.headroom_bytes)}")
    return t


def hardware_line(plan: Plan, fallback: str) -> str:
    hw = plan.hardware
    if hw is None:
        return f"{fallback} (hardware summary not in this plan yet)"
    name = hw.name or hw.device
    nodes = f"{hw.nodes} x " if hw.nodes > 1 else ""
    return f"{nodes}{hw.gpus} x {name}, {human(hw.memory_per_gpu_bytes)} each ({hw.source})"


def summary(plan: Plan, sp: SchemePlan, hardware_fallback: str) -> Table:
    """Size, bits per weight, fit and headroom of the selected scheme, then what they depend on."""
    g = Table.grid(padding=(0, 1))
    g.add_column(style="bold", no_wrap=True)
    g.add_column()
    m = plan.model
    g.add_row("Model", f"{m.name} ({m.architecture}{', ' + m.layout + ' layout' if m.layout else ''}), "
                       f"{m.params / 1e9:.1f}B params")
    g.add_row("Scheme", f"{sp.id} ({sp.kind}{', needs an imatrix' if sp.requires_imatrix else ''}): "
                        f"{human(sp.size_bytes)} = {gb(sp.size_bytes)}, {sp.bpw:.2f} bits/weight")
    g.add_row("Fits", fits_text(sp))
    speed = speed_lines(plan, sp)
    if speed:
        g.add_row("Speed", "\n".join(speed))
    g.add_row("Hardware", hardware_line(plan, hardware_fallback))
    ctx = f"{plan.context:,} tokens" + (f", KV mode {plan.kv_mode}" if plan.kv_mode else "")
    mem = sp.memory
    if mem is not None:
        ctx += f": KV cache {human(mem.kv_cache_bytes)}, compute {human(mem.compute_bytes)}"
        if mem.host_bytes:
            ctx += f", host {human(mem.host_bytes)}"
    g.add_row("Context", ctx)
    if mem is not None:
        fewest = getattr(mem, "fewest_devices", None)
        if fewest is not None:
            g.add_row("Devices", f"the fewest that would fit: {fewest} of these {len(mem.per_device)}")
        elif mem.per_device and hasattr(mem, "fewest_devices"):
            g.add_row("Devices", f"more than these {len(mem.per_device)} are needed")
        max_ctx = getattr(mem, "max_context", None)
        if max_ctx is not None:
            g.add_row("Max ctx", f"{max_ctx:,} tokens fit")
    if sp.accuracy is not None:
        a = sp.accuracy
        acc = f"{a.weighted_avg:.2f} weighted" if a.weighted_avg is not None else "unmeasured"
        if a.drop_pct is not None:
            # drop_pct is the table's accuracy drop (positive: below the baseline), not a signed change
            acc += f", drop {a.drop_pct:.2f}% vs {a.baseline or 'baseline'}"
        g.add_row("Accuracy", acc)
    else:
        g.add_row("Accuracy", f"no measurement of {m.name}" + (" (see the notes below)" if notes(plan, sp) else ""))
    return g


def speed_lines(plan: Plan, sp: SchemePlan) -> list[str]:
    """The predicted speed in the command line's words, and decode at the full context as its table
    gives it (where the depth asked is another)."""
    s = sp.speed
    if s is None:
        return []
    out = [speed_text(sp)]
    if s.depth_tokens != plan.context and s.decode_base_s > 0:
        out.append(f"{s.decode_tps_at(plan.context):.1f} tok/s decode at depth {plan.context} (the full context)")
    return out


def notes(plan: Plan, sp: SchemePlan | None) -> list[str]:
    out = rtext.plan_notes(plan)
    if plan.hardware is not None:
        out += plan.hardware.notes
    if sp is not None:
        out += sp.notes
        if sp.memory is not None:
            out += sp.memory.notes
    return out


def _bullets(mark: str, items: list[str]) -> Table:
    g = Table.grid(padding=(0, 1))
    g.add_column(no_wrap=True)
    g.add_column()
    for x in items:
        g.add_row(f" {mark}", x)
    return g


def recommendation_head(rec: Recommendation | None, pending: bool, current: str | None) -> Text:
    """One line, first on the Plan tab (seen without scrolling at 80x24): the pick, or why there is none."""
    if rec is None:
        if pending:
            return Text("Recommendation: planning every scheme...", style="italic")
        return Text("Recommendation: none in this plan (nothing measured fits, or no accuracy for this model).",
                    style="italic")
    head = Text("Recommended: ", style="bold")
    head.append(f"{rec.model + ' ' if rec.model else ''}{rec.scheme}", style="bold reverse")
    head.append("   (selected)" if current == rec.scheme else "   (a applies it)")
    return head


def recommendation(rec: Recommendation | None) -> Group | None:
    """Why the pick, and the alternatives (below the memory of the selected scheme)."""
    if rec is None:
        return None
    parts: list = [Text(f"Why {rec.model + ' ' if rec.model else ''}{rec.scheme}:", style="bold"),
                   _bullets("+", rtext.reasons(rec))]
    alts = rtext.alternatives(rec)
    if alts:
        parts += [Text("Alternatives:", style="bold"), _bullets("-", alts)]
    return Group(*parts)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)
