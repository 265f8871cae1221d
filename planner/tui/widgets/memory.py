"""Per-device memory bars: weights / KV / compute / reserve against the device's capacity.

Every figure comes from the plan's DeviceMemory; bars_text only scales them to the width it is given.
Segments differ by glyph as well as colour, so the bars read the same under NO_COLOR. Each run of one
glyph is one span (a bar is a handful of spans, not one per cell: the screen draws it in well under a
millisecond).
"""

from __future__ import annotations

from rich.text import Text

from planner.core.plan import DeviceMemory, SchemePlan
from planner.tui.format import MEMORY_PENDING
from planner.units import GiB

# (component class, glyph, legend) in the order the bar stacks them
SEGMENTS = (
    ("memory--weights", "█", "weights"),
    ("memory--kv", "▓", "KV"),
    ("memory--compute", "▒", "compute"),
    ("memory--reserve", "░", "reserve"),
)
FREE = "·"
CAPACITY = "┃"
NAME_WIDTH = 8


def _parts(d: DeviceMemory) -> list[int]:
    return [d.weights_bytes, d.kv_bytes, d.compute_bytes, d.overhead_bytes]


def bar_cells(d: DeviceMemory, scale: int, width: int) -> tuple[list[int], int]:
    """(cells of each segment, capacity column) for a bar `width` cells wide showing `scale` bytes.

    Cumulative edges are rounded, so the segments always add up to the rounded total.
    """
    edges = []
    cum = 0
    for b in _parts(d):
        cum += b
        edges.append(round(cum * width / scale) if scale else 0)
    cells = [e - (edges[i - 1] if i else 0) for i, e in enumerate(edges)]
    cap = round(d.capacity_bytes * width / scale) if scale else 0
    return cells, cap


# the component classes of the widget that draws the bars (their colours are in assets/tui.tcss)
COMPONENT_CLASSES = {
    "memory--weights", "memory--kv", "memory--compute", "memory--reserve",
    "memory--free", "memory--over", "memory--capacity", "memory--name",
}


def bar_devices(sp: SchemePlan | None) -> list[DeviceMemory]:
    """The devices a bar is drawn for: every device, and the host when it holds something."""
    if sp is None or sp.memory is None:
        return []
    mem = sp.memory
    devs = list(mem.per_device)
    if mem.host is not None and (mem.host.total_bytes or mem.host_bytes):
        devs.append(mem.host)
    return devs


def _suffix(d: DeviceMemory) -> str:
    if d.capacity_bytes <= 0:
        return f" {d.total_bytes / GiB:.1f} GiB"
    return (f" {d.total_bytes / GiB:.1f}/{d.capacity_bytes / GiB:.1f} GiB"
            + (" OVER" if d.headroom_bytes < 0 else ""))


class _Runs:
    """Text built from runs: consecutive cells of one style become one span."""

    def __init__(self) -> None:
        self.text = Text(no_wrap=True, overflow="ellipsis")
        self._s = ""
        self._style = None

    def add(self, s: str, style) -> None:
        if style is self._style or style == self._style:
            self._s += s
            return
        self.flush()
        self._s, self._style = s, style

    def flush(self) -> None:
        if self._s:
            self.text.append(self._s, style=self._style)
        self._s = ""


def bars_text(sp: SchemePlan | None, width: int, styles: dict) -> Text:
    """The legend and one bar per device, `width` cells wide; styles: component class -> rich Style."""
    devs = bar_devices(sp)
    if not devs:
        return Text("Per-device memory: " + MEMORY_PENDING, style="italic")
    st = styles
    out = _Runs()
    for cls, glyph, label in SEGMENTS:
        out.add(glyph, st[cls])
        out.add(f" {label} ", None)
    out.add(FREE, st["memory--free"])
    out.add(" free ", None)
    out.add(CAPACITY, st["memory--capacity"])
    out.add(" capacity\n", None)
    scale = max(max(d.total_bytes, d.capacity_bytes) for d in devs)
    suffix_w = max(len(_suffix(d)) for d in devs)
    width = max(10, width - NAME_WIDTH - 2 - suffix_w)
    for i, d in enumerate(devs):
        cells, cap = bar_cells(d, scale, width)
        unknown_cap = d.capacity_bytes <= 0        # host RAM not known: nothing to measure against
        if unknown_cap:
            cap = width + 1
        name = d.device if len(d.device) <= NAME_WIDTH else d.device[: NAME_WIDTH - 1] + "…"
        out.add(f"{name:<{NAME_WIDTH}} ", st["memory--name"])
        col = 0
        for (cls, glyph, _), n in zip(SEGMENTS, cells):
            for _ in range(n):
                if col == cap:
                    out.add(CAPACITY, st["memory--capacity"])
                out.add(glyph, st["memory--over"] if col >= cap else st[cls])
                col += 1
        while col < width:
            if col == cap:
                out.add(CAPACITY, st["memory--capacity"])
            out.add(FREE if col < cap and not unknown_cap else " ", st["memory--free"])
            col += 1
        if cap == width:
            out.add(CAPACITY, st["memory--capacity"])
        elif unknown_cap:
            out.add(" ", None)
        suffix = _suffix(d)
        over = suffix.endswith(" OVER")
        out.add(suffix.removesuffix(" OVER"), None)
        if over:
            out.add(" OVER", st["memory--over"])
        if i < len(devs) - 1:
            out.add("\n", None)
    out.flush()
    return out.text
