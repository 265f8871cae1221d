"""Per-device memory bars: weights / KV / compute / reserve against the device's capacity.

Every figure comes from the plan's DeviceMemory; the widget only scales them to the width it has.
Segments differ by glyph as well as colour, so the bars read the same under NO_COLOR.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from planner.core.plan import DeviceMemory, SchemePlan
from planner.render.units import GiB
from planner.tui.format import MEMORY_PENDING

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


class MemoryBars(Widget):
    """One bar per device (and the host, when it holds weights)."""

    COMPONENT_CLASSES = {
        "memory--weights", "memory--kv", "memory--compute", "memory--reserve",
        "memory--free", "memory--over", "memory--capacity", "memory--name",
    }
    DEFAULT_CSS = """
    MemoryBars { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._sp: SchemePlan | None = None

    def show(self, sp: SchemePlan | None) -> None:
        before = len(self._devices())
        self._sp = sp
        # a new layout only when the number of lines changes
        self.refresh(layout=len(self._devices()) != before or not before)

    def _devices(self) -> list[DeviceMemory]:
        if self._sp is None or self._sp.memory is None:
            return []
        mem = self._sp.memory
        devs = list(mem.per_device)
        if mem.host is not None and (mem.host.total_bytes or mem.host_bytes):
            devs.append(mem.host)
        return devs

    def get_content_height(self, container, viewport, width: int) -> int:
        devs = self._devices()
        if not devs:
            return super().get_content_height(container, viewport, width)
        return 1 + len(devs)

    @staticmethod
    def _suffix(d: DeviceMemory) -> str:
        if d.capacity_bytes <= 0:
            return f" {d.total_bytes / GiB:.1f} GiB"
        return (f" {d.total_bytes / GiB:.1f}/{d.capacity_bytes / GiB:.1f} GiB"
                + (" OVER" if d.headroom_bytes < 0 else ""))

    def render(self) -> Text:
        devs = self._devices()
        if not devs:
            return Text("Per-device memory: " + MEMORY_PENDING, style="italic")
        st = {c: self.get_component_rich_style(c) for c in self.COMPONENT_CLASSES}
        out = Text(no_wrap=True, overflow="ellipsis")
        for cls, glyph, label in SEGMENTS:
            out.append(glyph, style=st[cls])
            out.append(f" {label} ")
        out.append(FREE, style=st["memory--free"])
        out.append(" free ")
        out.append(CAPACITY, style=st["memory--capacity"])
        out.append(" capacity\n")
        scale = max(max(d.total_bytes, d.capacity_bytes) for d in devs)
        suffix_w = max(len(self._suffix(d)) for d in devs)
        width = max(10, self.size.width - NAME_WIDTH - 2 - suffix_w)
        for i, d in enumerate(devs):
            cells, cap = bar_cells(d, scale, width)
            unknown_cap = d.capacity_bytes <= 0        # host RAM not known: nothing to measure against
            if unknown_cap:
                cap = width + 1
            name = d.device if len(d.device) <= NAME_WIDTH else d.device[: NAME_WIDTH - 1] + "…"
            out.append(f"{name:<{NAME_WIDTH}} ", style=st["memory--name"])
            col = 0
            for (cls, glyph, _), n in zip(SEGMENTS, cells):
                for _ in range(n):
                    if col == cap:
                        out.append(CAPACITY, style=st["memory--capacity"])
                    out.append(glyph, style=st["memory--over"] if col >= cap else st[cls])
                    col += 1
            while col < width:
                if col == cap:
                    out.append(CAPACITY, style=st["memory--capacity"])
                out.append(FREE if col < cap and not unknown_cap else " ", style=st["memory--free"])
                col += 1
            if cap == width:
                out.append(CAPACITY, style=st["memory--capacity"])
            elif unknown_cap:
                out.append(" ")
            suffix = self._suffix(d)
            over = suffix.endswith(" OVER")
            out.append(suffix.removesuffix(" OVER"))
            if over:
                out.append(" OVER", style=st["memory--over"])
            if i < len(devs) - 1:
                out.append("\n")
        return out
