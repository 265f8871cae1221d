"""The workbench's Serving tab, driven with Textual's Pilot: the load fields re-plan, and the figures and the
per-user vs per-GPU curve shown are make_plan's serving figures."""

from __future__ import annotations

import asyncio

import pytest

from planner.core.plan import PlanRequest
from planner.make_plan import make_plan
from planner.tui.app import PlannerApp
from planner.tui.widgets.serving import curve_points

LOAD = dict(model="deepseek-r1-distill-qwen-7b", device="host", host_ram=64, host_bandwidth=100.0,
            schemes=["Q4_K_M"], ctx=16384, parallel=4)


def run(req: PlanRequest, body, size=(120, 40)):
    async def main():
        app = PlannerApp(req, full_plan_delay=0)
        async with app.run_test(size=size) as pilot:
            await app.settle()
            await pilot.pause()
            await body(app, pilot)
        return app

    return asyncio.run(main())


def test_curve_points_are_the_plans_serving_curve():
    sp = make_plan(PlanRequest(**LOAD)).schemes[0]
    pts = curve_points(sp)
    assert [p[0] for p in pts] == [1, 2, 4]
    for (c, per_gpu, per_user), p in zip(pts, sp.serving.curve):
        assert per_gpu == pytest.approx(p.output_tps / sp.serving.gpus)
        assert per_user == pytest.approx(1 / p.tpot_s)
    # more users: more tokens per GPU, fewer per user
    assert pts[0][1] < pts[1][1] < pts[2][1] and pts[0][2] > pts[1][2] > pts[2][2]
    assert curve_points(None) == []


def test_serving_tab_fields_replan_and_show_the_plans_figures():
    async def body(app, pilot):
        await pilot.press("7")
        await pilot.pause()
        assert app.query_one("#tabs").active == "serving"
        want = make_plan(PlanRequest(**LOAD)).schemes[0].serving
        text = app.screen_text()
        assert f"TTFT {want.ttft_s * 1e3:.0f} ms, TPOT {want.tpot_s * 1e3:.1f} ms" in text
        assert f"at most {want.max_concurrency} at once" in text
        assert app.query_one("#sv-concurrency").value == "1"

        # 8 clients on 4 slots: the queue
        app.query_one("#sv-concurrency").focus()
        await pilot.press("backspace", "8")
        await pilot.pause()
        assert app.request.concurrency == 1            # planned when complete: on Enter
        await pilot.press("enter")
        await pilot.pause()
        assert app.request.concurrency == 8
        want = make_plan(PlanRequest(**LOAD, concurrency=8)).schemes[0].serving
        assert app.sp.serving.ttft_s == pytest.approx(want.ttft_s) and app.sp.serving.max_concurrency == 4
        assert f"TTFT {want.ttft_s * 1e3:.0f} ms" in app.screen_text()

        # a TPOT target: drawn as the per-user rate it means
        app.query_one("#sv-tpot_ms").focus()
        await pilot.press(*"50", "enter")
        await pilot.pause()
        assert app.request.tpot_ms == 50.0
        assert "targets: TPOT 50 ms" in app.screen_text()
        assert "(line: TPOT target)" in app.screen_text()

        # generated tokens 0: refused by the option's own converter, said on the error line
        app.query_one("#sv-gen_tokens").focus()
        await pilot.press(*["backspace"] * 4, "0", "enter")
        await pilot.pause()
        assert app.error == "--gen must be at least 1, got 0"
        await pilot.press("backspace", *"64", "enter")
        await pilot.pause()
        assert app.error is None and app.request.gen_tokens == 64
        want = make_plan(PlanRequest(**LOAD, concurrency=8, tpot_ms=50.0, gen_tokens=64)).schemes[0].serving
        assert app.sp.serving.tpot_s == pytest.approx(want.tpot_s)

    run(PlanRequest(**LOAD), body)
