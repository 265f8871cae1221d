"""Terminal plots of a Plan with plotext: accuracy against memory on the tightest device (--plot)."""

from __future__ import annotations

from planner.core.accuracy.recommend import pareto_points
from planner.core.plan import Plan
from planner.terminal import strip_ansi
from planner.units import GiB


def plot_accuracy_memory(plan: Plan, task: str = "general", width: int = 100, height: int = 24) -> str:
    """Measured schemes as points (GiB on the tightest device, the one with the least headroom; task
    score), the Pareto front as a line and the device capacity as a vertical line. Returns the plot as text (no colour codes)."""
    import plotext as plt

    pts = pareto_points(plan, task)
    if not pts:
        return f"no measured accuracy for {plan.model.name}: nothing to plot"
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    fit = [p for p in pts if p.fits]
    over = [p for p in pts if not p.fits]
    if fit:
        plt.scatter([p.device_bytes / GiB for p in fit], [p.score for p in fit], marker="o", label="fits")
    if over:
        plt.scatter([p.device_bytes / GiB for p in over], [p.score for p in over], marker="x", label="does not fit")
    front = sorted((p for p in pts if p.on_front), key=lambda p: p.device_bytes)
    if len(front) > 1:
        plt.plot([p.device_bytes / GiB for p in front], [p.score for p in front], label="Pareto front")
    for p in pts:
        plt.text(p.scheme, p.device_bytes / GiB, p.score)
    hw = plan.hardware
    if hw and hw.memory_per_gpu_bytes:
        plt.vline(hw.memory_per_gpu_bytes / GiB)
    plt.title(f"{plan.model.name}: {task} score vs memory on the tightest device"
              + (f" ({hw.gpus} x {hw.name or hw.device}, ctx {plan.context})" if hw else ""))
    plt.xlabel("GiB on the tightest device (vertical line: capacity)")
    plt.ylabel("score")
    return strip_ansi(plt.build())
