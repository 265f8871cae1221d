"""The JSON documents of `--json` and the TUI's export: Plan.to_dict() with the recommendation's
sentences and the no-fit note written by planner.render.recommendation (the core's Recommendation and
NoFit are data only)."""

from __future__ import annotations

from typing import Any

from planner.core.plan import Plan
from planner.render.recommendation import as_dict, plan_notes


def plan_document(plan: Plan, with_tensors: bool = False, per_device: bool = True) -> dict[str, Any]:
    """The interface's plan document ("recommendation": {"scheme", "reasons", "alternatives", ...})."""
    doc = plan.to_dict(with_tensors=with_tensors, per_device=per_device)
    doc["recommendation"] = as_dict(plan.recommendation)
    doc["notes"] = plan_notes(plan)
    return doc


def auto_document(plan: Plan, candidates: list[Plan], with_tensors: bool = False) -> dict[str, Any]:
    """--model auto: the chosen model's document plus every candidate's ("candidates"). A candidate's
    schemes carry their memory without the device rows (the tightest device's row and the number of
    devices instead): on 384 devices the rows of 17 models x 35 schemes were 46 MB of JSON; the chosen
    model's own rows are in the document, and `--model ID` gives any other model's."""
    doc = plan_document(plan, with_tensors)
    doc["candidates"] = [plan_document(c, per_device=False) for c in candidates]
    return doc
