"""Command palette: pick a model, scheme or device by name."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

from planner.options import BY_DEST, control_options
from planner.tui.choices import PATH_CHOICE, model_options
from planner.tui.widgets.choices import MODEL, SCHEME, control_id


class ChoiceCommands(Provider):
    async def search(self, query: str) -> Hits:
        app = self.app
        matcher = self.matcher(query)
        items: list[tuple[str, str, object]] = []
        for _, m in model_options():
            if m != PATH_CHOICE:
                items.append((f"Model: {m}", "plan this model", partial(app.set_select, MODEL, m)))
        for label, s in app.wb.choices():
            items.append((f"Scheme: {label}", "plan this scheme", partial(app.set_select, SCHEME, s)))
        device = BY_DEST["device"]
        for label, d in control_options(device):
            items.append((f"Device: {label}", "plan on this hardware", partial(app.set_select, control_id(device), d)))
        for title, help_text, cb in items:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)
