"""The workbench run under Textual's Pilot, for the TUI tests."""

from __future__ import annotations

import asyncio

from planner.core.plan import PlanRequest
from planner.tui.app import PlannerApp

R1_910B_LEGACY = PlanRequest(device="910b", kv_mode="legacy")


def run(req: PlanRequest, body, size=(120, 40), settle: bool = True):
    """Run the app on `req`; settle: plan every scheme before `body` (else it runs in the background)."""
    async def main():
        app = PlannerApp(req, full_plan_delay=0 if settle else 0.25)
        async with app.run_test(size=size) as pilot:
            if settle:
                await app.settle()
            await pilot.pause()
            await body(app, pilot)
        return app

    return asyncio.run(main())
