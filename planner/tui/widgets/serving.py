"""The Serving tab: the load the plan is served under (requests in flight, tokens generated per request, the
TTFT and TPOT targets: the --concurrency, --gen, --ttft-ms and --tpot-ms options, read by their own
converters) and the selected scheme's serving figures, with the standard serving trade-off curve: output
tokens/s per user (1 / TPOT) against output tokens/s per GPU as the concurrency grows (1, 2, 4, ... up to
the most requests the deployment holds at once). Every figure is the plan's (SchemePlan.serving); the
widget computes none: a TPOT target is drawn as the per-user rate it means (1000 / ms)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static
from textual_plotext import PlotextPlot

from planner.core.plan import PlanRequest, SchemePlan
from planner.errors import PlannerError
from planner.options import BY_DEST
from planner.tui.widgets.choices import FIELD_KINDS, ChoicesPanel, FieldInput

# (request field, label, whole number)
FIELDS = (("concurrency", "in flight", True), ("gen_tokens", "gen tokens", True),
          ("ttft_ms", "TTFT ms", False), ("tpot_ms", "TPOT ms", False))


def field_id(dest: str) -> str:
    return f"sv-{dest}"


def curve_points(sp: SchemePlan | None) -> list[tuple[int, float, float]]:
    """(concurrency, output tokens/s per GPU, output tokens/s per user) along the scheme's serving curve;
    [] without serving figures."""
    s = sp.serving if sp is not None else None
    if s is None:
        return []
    gpus = max(1, s.gpus)
    return [(p.concurrency, p.output_tps / gpus, 1.0 / p.tpot_s if p.tpot_s > 0 else 0.0) for p in s.curve]


def summary(req: PlanRequest, sp: SchemePlan | None) -> Text:
    """The figures at the requested load, in a line or two."""
    if sp is None:
        return Text("no scheme selected", style="italic")
    s = sp.serving
    if s is None:
        return Text(f"{sp.id}: no serving figures for this plan (no speed prediction, or a request of "
                    f"{req.prompt} + {req.gen_tokens} tokens fits no slot)", style="italic")
    out = Text()
    out.append(f"{sp.id}, {s.concurrency} request(s) in flight of {s.prompt_tokens} + {s.gen_tokens} tokens: ",
               style="bold")
    out.append(f"TTFT {s.ttft_s * 1e3:.0f} ms, TPOT {s.tpot_s * 1e3:.1f} ms ({1 / s.tpot_s:.1f} tok/s each), "
               f"{s.output_tps:.1f} tok/s in all ({s.output_tps_per_gpu:.1f} per GPU), {s.requests_per_s:.2f} req/s\n")
    out.append(f"at most {s.max_concurrency} at once (KV cache); saturation at {s.saturation.concurrency}: "
               f"{s.saturation.requests_per_s:.2f} req/s, {s.saturation.output_tps:.1f} tok/s"
               + (f"; limited by {s.bound}" if s.bound else ""))
    targets = [f"{what} {v:g} ms" for what, v in (("TTFT", req.ttft_ms), ("TPOT", req.tpot_ms)) if v is not None]
    if targets:
        out.append("\ntargets: " + ", ".join(targets), style="dim")
    return out


class ServingCurvePlot(PlotextPlot):
    """show(request, scheme_plan): tokens/s per user (y) against tokens/s per GPU (x), one point per
    concurrency of the curve; the TPOT target as a horizontal line."""

    def show(self, req: PlanRequest, sp: SchemePlan | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        pts = curve_points(sp)
        if not pts:
            plt.title("tok/s per user vs per GPU: " + ("no serving figures for this plan" if sp is not None
                                                       else "no scheme selected"))
            self.refresh()
            return
        xs = [p[1] for p in pts]
        ys = [p[2] for p in pts]
        plt.plot(xs, ys, marker="braille")
        plt.scatter(xs, ys, marker="dot")
        for c, x, y in pts:
            plt.text(str(c), x, y)
        top = max(ys)
        if req.tpot_ms:
            plt.hline(1000.0 / req.tpot_ms)
            top = max(top, 1000.0 / req.tpot_ms)
        plt.ylim(0, top * 1.15)
        plt.xlim(0, max(xs) * 1.15)
        plt.xlabel("output tok/s per GPU")
        plt.ylabel("tok/s per user")
        plt.title(f"{sp.id}: per user vs per GPU, concurrency 1..{pts[-1][0]}"
                  + (" (line: TPOT target)" if req.tpot_ms else ""))
        self.refresh()


class ServingView(Vertical):
    """The load fields, the figures at that load, the curve. Edits go to `handler` as the choices panel's
    messages (ChoicesPanel.Changed / Invalid / Committed): the app hands them to the workbench."""

    def __init__(self, handler=None, **kw) -> None:
        super().__init__(**kw)
        self.handler = handler
        self._planned: dict[str, str] = {}      # each field's text as last planned

    def compose(self) -> ComposeResult:
        with Horizontal(id="sv-fields"):
            for dest, label, whole in FIELDS:
                yield Label(label, classes="sv-label")
                typed, restrict = FIELD_KINDS["int" if whole else "number"]
                yield FieldInput(typed, restrict, value="", placeholder="none" if not whole else
                                 str(BY_DEST[dest].default), id=field_id(dest), compact=True, classes="sv-input")
        yield Static("", id="sv-summary")
        yield ServingCurvePlot(id="sv-plot")

    def show(self, req: PlanRequest, sp: SchemePlan | None) -> None:
        """The request's load in the fields (not the one being typed in) and the scheme's figures."""
        for dest, _, _ in FIELDS:
            w = self.query_one(f"#{field_id(dest)}", Input)
            text = BY_DEST[dest].text(getattr(req, dest))
            if not w.has_focus:
                self._planned[dest] = text
                if w.value != text:
                    with w.prevent(Input.Changed):
                        w.value = text
        self.query_one("#sv-summary", Static).update(summary(req, sp))
        self.query_one(ServingCurvePlot).show(req, sp)

    # As in the choices panel: a typed value is planned when complete, on Enter or when the field loses
    # the focus; while it is typed the field is marked as edited
    def _dest(self, field: Input) -> str | None:
        return next((d for d, _, _ in FIELDS if field_id(d) == field.id), None)

    def on_input_changed(self, event: Input.Changed) -> None:
        dest = self._dest(event.input)
        if dest is not None:
            event.stop()
            event.input.set_class(event.value.strip() != self._planned.get(dest, ""), "edited")

    def on_input_blurred(self, event: Input.Blurred) -> None:
        if self._dest(event.input) is not None:
            event.stop()
            self.commit(event.input)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._dest(event.input) is not None:
            event.stop()
            if self.commit(event.input):
                self._send(ChoicesPanel.Committed())

    def commit(self, field: Input) -> bool:
        """Plan the field's value if it changed. False: not a valid value (the error line says why)."""
        dest = self._dest(field)
        o = BY_DEST[dest]
        text = field.value.strip()
        if text == self._planned.get(dest, ""):
            field.remove_class("edited")
            return True
        try:
            value = o.parse(text) if text else o.default
        except PlannerError as e:
            self._send(ChoicesPanel.Invalid(str(e)))
            return False
        self._planned[dest] = text
        field.remove_class("edited")
        self._send(ChoicesPanel.Changed({dest: value}))
        return True

    def _send(self, message) -> None:
        if self.handler is not None:
            self.handler(message)
        else:
            self.post_message(message)
