"""Plot (textual-plotext): the selected scheme's predicted decode tokens/s against the context depth,
from 0 to the plan's context. The data is planner.core.llamacpp.speed.decode_curve of the plan's own Speed
(decode time is linear in the depth, so the curve is exact for the model, not sampled runs)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from planner.core.llamacpp.speed import decode_curve
from planner.core.plan import SchemePlan


def speed_points(sp: SchemePlan | None, context: int, points: int = 17) -> list[tuple[int, float]]:
    """(depth, decode tok/s) of the scheme's predicted speed from 0 to `context`; [] without a prediction."""
    if sp is None or sp.speed is None or context <= 0:
        return []
    return decode_curve(sp.speed, context, points)


class SpeedDepthPlot(PlotextPlot):
    """show(scheme_plan, context): decode tok/s (y) against the cached tokens (x), the request's depth
    marked with a vertical line."""

    def show(self, sp: SchemePlan | None, context: int) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        pts = speed_points(sp, context)
        if not pts:
            plt.title("decode tok/s vs context depth: " + ("no speed predicted for this plan" if sp is not None
                                                            else "no scheme selected"))
            self.refresh()
            return
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        plt.plot(xs, ys, marker="braille")
        plt.vline(sp.speed.depth_tokens)
        plt.ylim(0, max(ys) * 1.1)
        plt.xlabel("tokens in the cache")
        plt.ylabel("decode tok/s")
        # short enough for an 80-column plot (plotext drops a title wider than the plot)
        plt.title(f"{sp.id} decode tok/s: {ys[0]:.1f} at 0, {ys[-1]:.1f} at {xs[-1]:,} (| --depth)")
        self.refresh()
