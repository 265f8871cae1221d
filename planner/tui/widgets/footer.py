"""The key footer: one line of text, not a row of widgets.

Textual's Footer recomposes its keys (one widget each) whenever the focused widget's bindings change,
and every recompose costs a layout of the whole screen: closing a list (focus back from the list to its
field) cost two such layouts after the one of the list itself. This footer writes the same keys into one
Static, updated in place (same height, no layout), and only when the keys it shows change. A key is
clickable as in Textual's footer (a click presses it). The keys that do not fit the line are left out
from the end (the ? key, shown early, lists every key).
"""

from __future__ import annotations

from textual.content import Content, Span
from textual.screen import Screen
from textual.widgets import Static


def footer_content(keys: list[tuple[str, str, str, bool]], styles: dict[str, object], width: int = 0) -> Content:
    """(key, how it is displayed, description, enabled) for each shown binding -> the footer's line;
    styles: the Style of each component class ("key", "description", "disabled"); width: the keys that
    would not fit in it whole are left out (0: no limit)."""
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0
    for key, shown, description, enabled in keys:
        key_text, desc_text = f" {shown} ", f"{description} " if description else ""
        k_end = pos + len(key_text)
        end = k_end + len(desc_text)
        if width and end > width:
            break
        parts += [key_text, desc_text]
        spans.append(Span(pos, k_end, styles["key"] if enabled else styles["disabled"]))
        if desc_text:
            spans.append(Span(k_end, end, styles["description"] if enabled else styles["disabled"]))
        if enabled:
            spans.append(Span(pos, end, f"@click=app.simulate_key({key!r})"))
        pos = end
    return Content("".join(parts), spans)


class KeyFooter(Static):
    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        width: 1fr;
        background: $footer-background;
        color: $footer-foreground;
    }
    KeyFooter > .footer-key--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyFooter > .footer-key--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    KeyFooter > .footer-key--disabled {
        text-style: dim;
    }
    """
    COMPONENT_CLASSES = {"footer-key--key", "footer-key--description", "footer-key--disabled"}

    _shown: tuple | None = None

    def __init__(self, **kw) -> None:
        super().__init__("", **kw)

    def on_mount(self) -> None:
        # filled when the screen publishes its bindings (after every widget is mounted), as Textual's footer
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        keys: list[tuple[str, str, str, bool]] = []
        seen: set[str] = set()
        for _, b, enabled, _tip in screen.active_bindings.values():
            if not b.show or b.action in seen:      # one key per action, as Textual's footer shows them
                continue
            seen.add(b.action)
            keys.append((b.key, self.app.get_key_display(b), b.description, enabled))
        self._draw(tuple(keys))

    def on_resize(self) -> None:
        if self._shown is not None:
            self._draw(self._shown[0], force=True)

    def _draw(self, keys: tuple, force: bool = False) -> None:
        width = self.size.width or self.app.size.width
        if not force and (keys, width) == self._shown:
            return
        self._shown = (keys, width)
        styles = {k: self.get_visual_style(f"footer-key--{k}") for k in ("key", "description", "disabled")}
        self.update(footer_content(list(keys), styles, width), layout=False)
