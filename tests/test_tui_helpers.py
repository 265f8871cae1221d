"""The TUI's command lines, file writing and bar arithmetic."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from planner.cli import main_parser, request_from_args
from planner.core.plan import DeviceMemory, PlanRequest
from planner.errors import PlannerError
from planner.options import request_args
from planner.tui.choices import write_new_file
from planner.tui.jobs import ChildProcess
from planner.tui.widgets.memory import bar_cells
from planner.tui.widgets.tensors import filter_tensors

@pytest.mark.parametrize("req", [
    PlanRequest(),
    PlanRequest(model="deepseek-r1-distill-qwen-32b", device="a100", gpus=1, ctx=8192, task="math"),
    PlanRequest(device="910b", kv_mode="legacy", cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on",
                parallel=4, ngl=40, n_cpu_moe=3, tensor_split=[3.0, 1.0], rpc=["127.0.0.1:50052=24G"], nodes=2,
                imatrix=True, ubatch=256, batch=1024),
    PlanRequest(model_file="/models/R1 Q4 'x'.gguf", imatrix=False, engine="vllm"),
    PlanRequest(engine="sglang", concurrency=64, prompt=1024, gen_tokens=1024, ttft_ms=2000.0, tpot_ms=50.0),
])
def test_request_args_round_trip_through_the_cli_parser(req):
    back = request_from_args(main_parser().parse_args(request_args(req)))
    assert back == req


def test_write_new_file_never_overwrites(tmp_path):
    p = write_new_file(tmp_path / "plan.json", "one\n")
    assert p.read_text() == "one\n"
    with pytest.raises(PlannerError, match="already exists"):
        write_new_file(p, "two\n")
    assert p.read_text() == "one\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["plan.json"]     # no temporary left behind
    with pytest.raises(PlannerError, match="is not a folder"):
        write_new_file(tmp_path / "missing" / "x.json", "x")


def test_bar_cells_add_up_and_mark_capacity():
    d = DeviceMemory("CUDA0", weights_bytes=50, kv_bytes=10, compute_bytes=5, overhead_bytes=5, capacity_bytes=80)
    cells, cap = bar_cells(d, scale=100, width=40)
    assert cells == [20, 4, 2, 2] and cap == 32
    over = DeviceMemory("CUDA1", weights_bytes=90, kv_bytes=10, capacity_bytes=80)
    cells, cap = bar_cells(over, scale=100, width=40)
    assert sum(cells) == 40 and cap == 32


def test_filter_by_name_part_and_type():
    from planner.make_plan import make_plan

    sp = make_plan(PlanRequest(device="h100", schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
    exps = filter_tensors(sp.tensors, "ffn_down_exps")
    assert len(exps) == 58 and all("ffn_down_exps" in t.name for t in exps)
    q6 = filter_tensors(sp.tensors, "ffn_down_exps Q6_K")
    assert sorted(t.name for t in q6) == ["blk.3.ffn_down_exps.weight", "blk.4.ffn_down_exps.weight"]
    assert filter_tensors(sp.tensors, "") == sp.tensors


_SLEEPER = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0): look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("use_pty", [False, True])
def test_child_stop_ends_the_child_and_its_descendants(use_pty):
    async def run():
        child = ChildProcess([sys.executable, "-c", _SLEEPER], use_pty=use_pty)
        await child.start()
        lines = child.lines()
        first, _ = await lines.__anext__()
        grandchild = int(first)
        t0 = time.monotonic()
        rc = await child.stop(grace=2.0)
        took = time.monotonic() - t0
        async for _ in lines:       # the output ends once every writer is gone
            pass
        return child, grandchild, rc, took

    child, grandchild, rc, took = asyncio.run(run())
    assert rc == -signal.SIGINT or rc == 1 or rc == -signal.SIGKILL   # Python exits on SIGINT with a traceback (1)
    assert took < 5
    deadline = time.monotonic() + 3
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)
    assert _gone(child.proc.pid)


def test_planning_process_answers_as_make_plan_and_can_be_stopped():
    import threading

    from planner.make_plan import make_plan
    from planner.tui.background import PlanWorker, Superseded

    w = PlanWorker()
    try:
        req = PlanRequest(device="910b", kv_mode="legacy")
        base, plan, err = w.plan(req, None)
        assert err is None and base == req
        want = make_plan(req)
        assert plan.to_dict() == want.to_dict()            # tensors are left out of the answer
        assert all(not s.tensors for s in plan.schemes)
        assert w.plan(PlanRequest(device="nope"), None)[2].startswith("unknown device 'nope'")

        # a plan nobody wants any more is stopped: --model auto takes seconds, so it is still running
        token = object()
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", _catch(lambda: w.plan(
            PlanRequest(model="auto", device="a100", gpus=1), None, token))))
        t.start()
        time.sleep(0.5)
        pid = w._proc.pid
        w.cancel(object())                 # someone else's token: nothing happens
        assert w._proc is not None and w._proc.pid == pid
        w.cancel(token)
        t.join(10)
        assert isinstance(out["r"], Superseded)
        assert _gone(pid)
        assert w.plan(req, ["DQ3_K_M"])[1].scheme("DQ3_K_M").size_bytes == want.scheme("DQ3_K_M").size_bytes
    finally:
        w.shutdown()


def _catch(fn):
    try:
        return fn()
    except Exception as e:          # the test looks at which one
        return e


def test_planning_process_dies_with_the_app():
    import subprocess

    code = ("import sys, time; from planner.tui.background import WORKER; p = WORKER.start(); "
            "print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert not _gone(worker)
    parent.kill()                    # no cleanup runs in a killed process: the kernel's death signal acts
    parent.wait()
    deadline = time.monotonic() + 5
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker)
