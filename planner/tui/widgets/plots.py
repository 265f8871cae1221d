"""Plots (textual-plotext): accuracy against memory per device for every scheme, the selected
scheme's memory per device by component, and its predicted decode tok/s against the context depth. Points and bars are the plan's figures, in GiB."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from planner.core.plan import Plan, SchemePlan
from planner.tui.format import MEMORY_PENDING, fullest_device, gib_value
from planner.tui.widgets.speed_plot import SpeedDepthPlot


def accuracy_points(plan: Plan | None) -> list[tuple[str, float, float]]:
    """(scheme, GiB on the fullest device, weighted accuracy) for every scheme that has both."""
    pts = []
    for s in plan.schemes if plan else []:
        full = fullest_device(s)
        if full is None or s.accuracy is None or s.accuracy.weighted_avg is None:
            continue
        pts.append((s.id, gib_value(full.total_bytes), s.accuracy.weighted_avg))
    return pts


class AccuracyMemoryPlot(PlotextPlot):
    def show(self, plan: Plan | None, pending: bool) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        pts = accuracy_points(plan)
        plt.title("accuracy vs memory on the fullest device")
        plt.xlabel("GiB per device")
        plt.ylabel("weighted acc.")
        if pts:
            xs = [p[1] for p in pts]
            ys = [p[2] for p in pts]
            plt.scatter(xs, ys, marker="dot")
            for name, x, y in pts:
                plt.text(name, x, y)
            caps = {gib_value(full.capacity_bytes) for s in plan.schemes
                    if (full := fullest_device(s)) is not None}
            for c in caps:
                plt.vline(c)
            # room around the points for their labels (and the capacity line)
            lo, hi = min(xs + list(caps)), max(xs + list(caps))
            pad = (hi - lo) * 0.15 or 1.0
            plt.xlim(lo - pad, hi + pad)
            ylo, yhi = min(ys), max(ys)
            ypad = (yhi - ylo) * 0.15 or 0.5
            plt.ylim(ylo - ypad, yhi + ypad)
        else:
            plt.title("accuracy vs memory: " + ("planning every scheme..." if pending else
                      "no scheme in this plan has both memory and measured accuracy"))
        self.refresh()


class ComponentPlot(PlotextPlot):
    def show(self, sp: SchemePlan | None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if sp is None or sp.memory is None or not sp.memory.per_device:
            plt.title("memory by component: " + MEMORY_PENDING)
            self.refresh()
            return
        devs = sp.memory.per_device
        names = [d.device for d in devs]
        comps = [
            [gib_value(d.weights_bytes) for d in devs],
            [gib_value(d.kv_bytes) for d in devs],
            [gib_value(d.compute_bytes) for d in devs],
            [gib_value(d.overhead_bytes) for d in devs],
        ]
        plt.stacked_bar(names, comps, labels=["weights", "KV", "compute", "reserve"])
        cap = max(gib_value(d.capacity_bytes) for d in devs)
        plt.hline(cap)
        top = max([cap] + [gib_value(d.total_bytes) for d in devs])
        plt.ylim(0, top * 1.4)          # headroom for the legend above the bars
        plt.title(f"{sp.id}: GiB per device by component (line: capacity {cap:.1f} GiB)")
        self.refresh()


class PlotsView(Vertical):
    def compose(self) -> ComposeResult:
        yield AccuracyMemoryPlot(id="plot-accuracy")
        yield ComponentPlot(id="plot-components")
        yield SpeedDepthPlot(id="plot-speed")
        yield Static("", id="plot-note")
