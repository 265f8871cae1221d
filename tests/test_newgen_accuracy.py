"""The current generation's published full-precision scores: baselines that are shown and never ranked, so
the recommendation for these models says plainly that no quantized scheme is measured."""

from __future__ import annotations

from planner.core.accuracy import tables as acc
from planner.core.catalog import catalog
from planner.core.plan import PlanRequest
from planner.make_plan import make_plan

NEW = {"deepseek-r1-0528-qwen3-8b": "BF16", "deepseek-v3.1-terminus": "FP8", "deepseek-v3.2-exp": "FP8"}


def test_baselines_of_catalog_models_never_rank():
    for mid, scheme in NEW.items():
        assert mid in catalog()
        ms = acc.measurements(mid)
        assert [(m.scheme, m.role) for m in ms] == [(scheme, "baseline")]
        assert all(c.source and m.source for m in ms for c in m.cells.values())
        # shown, never ranked: no scheme of these models has a measurement that speaks for it
        assert acc.measurements(mid, rankable=True) == []
        assert mid not in acc.models_with_accuracy()
    # R1-0528-Qwen3-8B's card shares AIME 2024 and GPQA-Diamond with Table 8: its shown general score is
    # their Table 8 weighted mean; V3.1-Terminus's card shares GPQA-Diamond only
    q = acc.measurements("deepseek-r1-0528-qwen3-8b")[0]
    w = acc.task_weights()
    assert acc.task_benchmarks_used(q) == ["aime2024", "gpqa"]
    want = sum(q.cells[b].value * w[b] for b in ("aime2024", "gpqa")) / (w["aime2024"] + w["gpqa"])
    assert abs(acc.task_score(q) - want) < 1e-9
    assert acc.task_benchmarks_used(acc.measurements("deepseek-v3.1-terminus")[0]) == ["gpqa"]


def test_recommendation_is_unmeasured():
    plan = make_plan(PlanRequest(model="deepseek-r1-0528-qwen3-8b", device="rtx4090", gpus=1,
                                 schemes=["Q4_K_M", "Q8_0"], ctx=32768))
    rec = plan.recommendation
    assert rec is not None and rec.scheme == "Q8_0"      # nothing measured: the most bits that fit
    assert rec.basis == "unmeasured"
    assert all(e.score is None for e in rec.ranked)
