"""Snapshots of the main screens at fixed sizes (pytest-textual-snapshot). Deterministic: the device is
given, so nothing is detected, and every scheme is planned before the picture is taken.

Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from planner.core.plan import PlanRequest
from planner.tui.app import PlannerApp

PAPER_910B = dict(device="910b", kv_mode="legacy", schemes=["DQ3_K_M"])


def _app(**kw) -> PlannerApp:
    return PlannerApp(PlanRequest(**kw), full_plan_delay=0)


def _then(*keys: str):
    async def run_before(pilot) -> None:
        await pilot.app.settle()
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.app.settle()
        await pilot.pause()
    return run_before


SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_plan_screen(snap_compare, size):
    assert snap_compare(_app(**PAPER_910B), terminal_size=size, run_before=_then())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_plan_screen_when_it_does_not_fit(snap_compare, size):
    assert snap_compare(_app(device="910b", kv_mode="legacy", schemes=["Q4_K_M"]), terminal_size=size,
                        run_before=_then())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_schemes_screen(snap_compare, size):
    assert snap_compare(_app(**PAPER_910B), terminal_size=size, run_before=_then("2"))


def test_accuracy_screen(snap_compare):
    assert snap_compare(_app(**PAPER_910B), terminal_size=(120, 40), run_before=_then("3"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tensors_screen_filtered(snap_compare, size):
    assert snap_compare(_app(**PAPER_910B), terminal_size=size,
                        run_before=_then("f", *"ffn_down_exps", "enter"))


def test_plots_screen(snap_compare):
    assert snap_compare(_app(**PAPER_910B), terminal_size=(120, 40), run_before=_then("5"))


def test_run_screen_idle(snap_compare):
    assert snap_compare(_app(**PAPER_910B), terminal_size=(80, 24), run_before=_then("6"))


def test_launch_commands_dialog(snap_compare):
    assert snap_compare(_app(**PAPER_910B), terminal_size=(120, 40), run_before=_then("l"))


def test_plan_screen_no_color(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(_app(**PAPER_910B), terminal_size=(80, 24), run_before=_then())
