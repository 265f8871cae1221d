"""The Plan tab in one widget: the recommendation's line, the summary of the selected scheme (fit,
predicted speed, ...), its memory bars per device, why the recommendation, and the notes.

One line-API widget instead of a column of Statics: a change renders these parts once into lines (at
the widget's width) and repaints; the screen is laid out again only when the number of lines changes
the scroll range. Every figure comes from the plan through planner.tui.format and bars_text.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from planner.core.plan import Plan, SchemePlan
from planner.tui import format as fmt
from planner.tui.widgets.memory import COMPONENT_CLASSES, bars_text


SLACK = 8


class PlanView(ScrollView, can_focus=True):
    COMPONENT_CLASSES = COMPONENT_CLASSES | {"plan--section", "plan--note"}

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._state: tuple | None = None        # (plan, scheme, recommendation, pending, hardware fallback)
        self._message: RenderableType | None = None
        self._strips: list[Strip] = []
        self._width = 0
        self._base = None

    # ---------------------------------------------------------------- content
    def show(self, plan: Plan, sp: SchemePlan, rec, pending: bool, hardware_fallback: str) -> None:
        self._state = (plan, sp, rec, pending, hardware_fallback)
        self._message = None
        self._build()

    def show_message(self, message: RenderableType) -> None:
        self._message = message
        self._build()

    def text(self) -> str:
        """The lines shown, as plain text."""
        return "\n".join(s.text for s in self._strips)

    def _parts(self, width: int) -> list[RenderableType]:
        if self._message is not None or self._state is None:
            return [self._message or ""]
        plan, sp, rec, pending, fallback = self._state
        section = self.get_component_rich_style("plan--section")
        styles = {c: self.get_component_rich_style(c) for c in COMPONENT_CLASSES}
        parts: list[RenderableType] = [
            fmt.recommendation_head(rec, pending, sp.id),
            fmt.summary(plan, sp, fallback),
            "",
            Text("Memory per device", style=section),
            bars_text(sp, width, styles),
        ]
        why = fmt.recommendation(rec)
        if why is not None:
            parts += ["", why]
        notes = fmt.notes(plan, sp)
        if notes:
            parts += ["", Text("\n".join(f"note: {n}" for n in notes), style=self.get_component_rich_style("plan--note"))]
        return parts

    def _build(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        if not self.is_mounted or width <= 0:
            return
        self._width = width
        console = self.app.console
        options = console.options.update_width(width).update(highlight=False)
        base = self._base = self.rich_style
        strips: list[Strip] = []
        for part in self._parts(width):
            if isinstance(part, str) and not part:
                strips.append(Strip.blank(width, base))
                continue
            for line in console.render_lines(part, options, style=base, pad=True):
                strips.append(Strip(line, width))
        self._strips = strips
        # The scroll range is at least the view and grows in steps of SLACK lines: setting it lays the
        # screen out again, which a change of a line or two (another scheme's notes) should not cost; it
        # shrinks only below half (a new choice drops the recommendation's reasons until the plan of
        # every scheme is back: they return a moment later).
        view = self.scrollable_content_region.height
        now = self.virtual_size.height
        want = max(len(strips), view)
        if want > view:
            want = -(-want // SLACK) * SLACK
        if want > now or want < now // 2 or self.virtual_size.width != width:
            self.virtual_size = Size(width, want)
        self.refresh()

    # ---------------------------------------------------------------- drawing
    def on_resize(self) -> None:
        if self.scrollable_content_region.width != self._width:
            self._build()

    def on_mount(self) -> None:
        self._build()

    def render_line(self, y: int) -> Strip:
        sx, sy = self.scroll_offset
        width = self._width or self.size.width
        base = self._base or self.rich_style
        i = sy + y
        if i >= len(self._strips):
            return Strip.blank(width, base)
        return self._strips[i].crop_extend(sx, sx + width, base)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted:
            self._build()
