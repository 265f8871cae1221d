"""The key footer, rebuilt only when the keys it shows change (Textual's own rebuilds all its keys on
every focus change, which costs a layout of the screen each time a list opens or closes)."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    _shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        shown = tuple((b.key, b.action, enabled) for (_, b, enabled, _) in screen.active_bindings.values() if b.show)
        if shown == self._shown and self._bindings_ready:
            return
        self._shown = shown
        super().bindings_changed(screen)
