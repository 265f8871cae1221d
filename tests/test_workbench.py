"""The TUI's session without the UI (planner/workbench.py): selection, plans by request, the plan of every
scheme and when it is current, GGUF files as the CLI plans them, and the option schema behind the controls."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.core.accuracy import tables as accuracy
from planner.core import catalog as cat
from planner.core.llamacpp.memory import CACHE_TYPES
from planner.core.plan import PlanRequest
from planner.engines.registry import engine, engine_names
from planner.options import BY_DEST, CONTROLS, control_options, request_args
from planner.make_plan import make_plan
from planner.workbench import FILE, Workbench

R1_910B = PlanRequest(device="910b", kv_mode="legacy")


class Counting:
    def __init__(self) -> None:
        self.calls: list[PlanRequest] = []

    def __call__(self, req: PlanRequest):
        self.calls.append(req)
        return make_plan(req)


def test_the_selected_scheme_alone_then_read_from_the_plan_of_every_scheme():
    plan = Counting()
    wb = Workbench(replace(R1_910B, schemes=["DQ3_K_M"]), planner=plan)
    sel = wb.refresh()
    want = make_plan(replace(R1_910B, schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
    assert [s.id for s in sel.plan.schemes] == ["DQ3_K_M"]
    assert sel.scheme.size_bytes == want.size_bytes
    assert [d.total_bytes for d in sel.scheme.memory.per_device] == [d.total_bytes for d in want.memory.per_device]
    assert wb.full_pending and wb.full_plan is None and wb.recommendation() is None
    # the plan of every scheme is the request without --scheme: what `dq-planner --headless --json` plans
    assert wb.full_request() == R1_910B and "--scheme" not in wb.cli_args()
    full = wb.plan_all()
    assert [s.id for s in full.schemes] == [s.id for s in make_plan(R1_910B).schemes]
    assert wb.selected.plan is full and wb.selected.scheme.size_bytes == want.size_bytes
    assert wb.recommendation().scheme == make_plan(R1_910B).recommendation.scheme
    # stepping reads from it: no more planning
    n = len(plan.calls)
    ids = [v for _, v in wb.choices()]
    assert ids == [s.id for s in full.schemes]
    assert wb.step(1) and wb.scheme_id == ids[ids.index("DQ3_K_M") + 1]
    assert wb.selected.scheme.size_bytes == full.scheme(wb.scheme_id).size_bytes
    assert len(plan.calls) == n


def test_plans_are_remembered_by_request_and_the_full_plan_is_current_for_one_request():
    plan = Counting()
    wb = Workbench(replace(R1_910B, schemes=["Q4_K_M"]), planner=plan)
    wb.refresh()
    wb.select("Q3_K_M")
    wb.select("Q4_K_M")                      # planned before: from the cache
    assert [r.schemes for r in plan.calls] == [["Q4_K_M"], ["Q3_K_M"]]
    old = wb.full_request()
    full = make_plan(old)
    assert wb.update(ctx=16384)
    assert wb.selected.plan.context == 16384
    assert wb.selected.scheme.memory.kv_cache_bytes == make_plan(
        replace(R1_910B, ctx=16384, schemes=["Q4_K_M"])).scheme("Q4_K_M").memory.kv_cache_bytes
    # an answer for the choices before the change is not this plan's
    assert wb.receive_full(old, full) is False
    assert wb.full_plan is None and wb.full_pending
    assert not wb.update(ctx=16384)          # no change, nothing planned
    assert wb.receive_full(wb.full_request(), make_plan(wb.full_request())) is True
    assert wb.full_plan.context == 16384 and not wb.full_pending
    wb.update(ctx=32768)
    assert wb.full_plan is None              # the one check: stale as soon as the request moves


def test_a_gguf_file_is_planned_as_the_cli_plans_it(tiny_gguf):
    path = str(tiny_gguf("deepseek2-mla"))
    wb = Workbench(PlanRequest(model_file=path, device="h100"))
    sel = wb.refresh()
    file_plan = make_plan(PlanRequest(model_file=path, device="h100"))
    assert wb.scheme_id == FILE and sel.scheme.kind == "file"
    assert sel.scheme.size_bytes == file_plan.schemes[0].size_bytes
    # the file alone, as `--model-file F` plans it
    assert wb.full_request().schemes is None and wb.plan_all().to_dict() == file_plan.to_dict()
    assert len(file_plan.schemes) == 1
    # the choices: the file, then every scheme the engine offers for its architecture
    ids = [v for _, v in wb.choices()]
    assert ids[0] == FILE and ids[1:] == list(engine("llama.cpp").scheme_ids(_file_model(path)))
    wb.select("Q4_K_M")
    assert wb.full_request().schemes == ["Q4_K_M"]
    args = wb.cli_args()
    assert args[args.index("--scheme") + 1] == "Q4_K_M" and args.count("--scheme") == 1
    doc = wb.document()
    want = make_plan(PlanRequest(model_file=path, device="h100", schemes=["Q4_K_M"]))
    assert [(s["id"], s["size_bytes"], s["memory"]["total_bytes"]) for s in doc["schemes"]] == [
        (s.id, s.size_bytes, s.memory.total_bytes) for s in want.schemes]
    assert [s["id"] for s in doc["schemes"]][1:] == ["Q4_K_M"]
    assert wb.selected.scheme.size_bytes == want.schemes[1].size_bytes


def _file_model(path: str):
    from planner.make_plan import model_input

    return model_input(PlanRequest(model_file=path)).file_model


def test_a_new_model_or_engine_brings_its_schemes_and_keeps_the_selection_where_it_applies():
    wb = Workbench(PlanRequest(device="a100", schemes=["DQ3_K_M"]))
    wb.refresh()
    wb.update(model="deepseek-r1-distill-qwen-32b")
    # DQ3_K_M is a deepseek2 recipe: the default takes its place
    assert wb.scheme_id == "Q4_K_M" and wb.error is None
    entry = cat.resolve_model("deepseek-r1-distill-qwen-32b")
    assert [v for _, v in wb.choices()] == list(engine("llama.cpp").scheme_ids(entry))
    wb.update(engine="vllm")
    fmts = list(engine("vllm").scheme_ids(entry))
    assert [v for _, v in wb.choices()] == fmts and wb.scheme_id in fmts
    want = make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="a100", engine="vllm",
                                 schemes=[wb.scheme_id]))
    assert wb.selected.scheme.size_bytes == want.scheme(wb.scheme_id).size_bytes
    assert wb.launch_script() == "#!/bin/sh\nset -eu\n" + "\n".join(
        engine("vllm").launch(wb.selected.plan, wb.request, wb.scheme_id).lines) + "\n"


def test_apply_the_recommendation_and_a_bad_choice_is_an_error_not_a_plan():
    wb = Workbench(replace(R1_910B, schemes=["Q8_0"]))
    wb.refresh()
    assert not wb.apply_recommendation()     # nothing recommended before the plan of every scheme
    wb.plan_all()
    rec = make_plan(R1_910B).recommendation.scheme
    assert wb.apply_recommendation() and wb.scheme_id == rec
    assert wb.selected.scheme.fits is True
    wb.update(ctx=0)
    assert wb.error is not None and "--ctx" in wb.error
    wb.update(ctx=4096)
    assert wb.error is None and wb.selected.plan.context == 4096


def test_the_controls_come_from_the_option_schema_and_its_data():
    by = {o.dest: o for o in CONTROLS}
    assert [v for _, v in control_options(by["task"])] == list(accuracy.task_ids())
    assert [v for _, v in control_options(by["cache_type_k"])] == list(CACHE_TYPES)
    assert [v for _, v in control_options(by["engine"])] == list(engine_names())
    # a typed value is read as the command line reads it
    assert by["gpus"].parse("2") == 2
    assert by["tensor_split"].parse("3,1") == [3.0, 1.0]
    assert by["rpc"].parse("a:1, b:2=8") == ["a:1", "b:2=8"]
    with pytest.raises(Exception, match="--ctx must be at least 1"):
        by["ctx"].parse("0")
    assert "F16" in BY_DEST["cache_type_k"].choices      # the core accepts either case
    req = PlanRequest(model_file="/m/x.gguf", schemes=["Q4_K_M", "IQ2_XXS"], max_context=True, dp_attention=True,
                      gpu_memory_utilization=0.8, rpc=["h:1"])
    from planner.cli import main_parser, request_from_args

    assert request_from_args(main_parser().parse_args(request_args(req))) == req
