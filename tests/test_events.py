"""`--events jsonl` of dq-planner quantize and serve (planner/events.py), with the real llama.cpp, and the
TUI's job runner reading those events (planner/tui/jobs.py, planner/tui/widgets/jobs.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from llamacpp_support import dq, free_port, processes_using, require_llama_cpp
from llamacpp_support import rpc_servers as start_rpc_servers
from planner.events import SCHEMA, EventSink, NullSink, parse_event, sink_for, wanted
from planner.gguf.header import read_header

FIX = Path(__file__).parent / "fixtures" / "tui"
MIB = 1 << 20


def events_of(stdout: str) -> list[dict]:
    """Every line of stdout is one event with exactly the schema's keys."""
    out = []
    for line in stdout.splitlines():
        ev = json.loads(line)
        assert set(ev) == {"event", *SCHEMA[ev["event"]]}, ev
        out.append(ev)
    return out


def plan_of(src: Path, scheme: str, imatrix: bool = False):
    from planner.core.llamacpp.schemes import resolve_scheme
    from planner.core.llamacpp.sizing import size_scheme
    from planner.gguf.model import model_from_gguf

    return size_scheme(model_from_gguf(os.fspath(src)), resolve_scheme(scheme), imatrix=imatrix)


# ---------------------------------------------------------------------------------------------------
# the sink
# ---------------------------------------------------------------------------------------------------

def test_sink_writes_one_flushed_line_per_event_and_keeps_to_the_schema():
    buf = io.StringIO()
    s = EventSink(buf)
    s.emit("error", message="x", exit_code=2)
    s.emit("done", exit_code=2, output=None)
    s.emit("done", exit_code=0, output=None)          # nothing after done
    assert [json.loads(l) for l in buf.getvalue().splitlines()] == [
        {"event": "error", "message": "x", "exit_code": 2}, {"event": "done", "exit_code": 2, "output": None}]
    with pytest.raises(ValueError):
        EventSink(io.StringIO()).emit("progress", tensor=1)               # fields missing
    with pytest.raises(ValueError):
        EventSink(io.StringIO()).emit("nonsense")
    with pytest.raises(ValueError):
        NullSink().emit("nonsense")
    assert isinstance(sink_for(None), NullSink) and not sink_for(None).enabled and sink_for("jsonl").enabled
    assert wanted(["--input", "a", "--events", "jsonl"]) == "jsonl" and wanted(["--events=jsonl"]) == "jsonl"
    assert wanted(["--input", "--", "--events", "jsonl"]) is None
    assert parse_event('{"event": "ready", "url": "u", "pid": 1}') == {"event": "ready", "url": "u", "pid": 1}
    assert parse_event('{"event": "later-kind"}') is None and parse_event("Host  KV cache  7.50") is None


# ---------------------------------------------------------------------------------------------------
# quantize
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lc():
    return require_llama_cpp("llama-quantize", "llama-server", "rpc-server")


def test_quantize_events(lc, tiny_gguf, tmp_path):
    src = tiny_gguf("deepseek2-mla")
    out = tmp_path / "out.gguf"
    r = dq("quantize", "--input", src, "--scheme", "DQ3_K_M", "--output", out, "--events", "jsonl", "--threads", "2")
    assert r.returncode == 0, r.stderr
    ev = events_of(r.stdout)
    plan = plan_of(src, "DQ3_K_M")
    n = len(plan.tensors)
    kinds = [e["event"] for e in ev]
    assert kinds == ["started"] + ["tensor", "progress"] * n + ["verified", "done"]
    started = ev[0]
    assert started["program"] == "llama-quantize" and Path(started["argv"][0]).name == "llama-quantize"
    assert "Q3_K_M" in started["argv"] and isinstance(started["pid"], int)     # the recipe's base ftype
    prog = [e for e in ev if e["event"] == "progress"]
    assert [p["tensor"] for p in prog] == list(range(1, n + 1)) and {p["tensors"] for p in prog} == {n}
    done_bytes = [p["bytes_done"] for p in prog]
    assert all(b > a for a, b in zip(done_bytes, done_bytes[1:]))
    assert done_bytes[-1] == prog[-1]["bytes_total"] == sum(t.bytes for t in read_header(src).tensors)
    assert prog[-1]["eta_s"] == 0.0 and prog[-1]["elapsed_s"] >= prog[0]["elapsed_s"] >= 0
    tensors = {e["name"]: (e["type"], e["bytes"]) for e in ev if e["event"] == "tensor"}
    assert tensors == {t.name: (t.type, t.bytes) for t in plan.tensors}
    assert tensors["blk.1.ffn_down_exps.weight"][0] == "q3_K"
    assert ev[-2] == {"event": "verified", "ok": True, "tensors": n, "differences": 0, "mismatches": []}
    assert ev[-1] == {"event": "done", "exit_code": 0, "output": str(out)}
    assert out.is_file() and "\r" not in r.stderr


def test_quantize_dry_run_events(lc, tiny_gguf):
    src = tiny_gguf("llama")
    r = dq("quantize", "--input", src, "--scheme", "IQ2_XXS", "--dry-run", "--events", "jsonl")
    assert r.returncode == 0, r.stderr
    ev = events_of(r.stdout)
    plan = plan_of(src, "IQ2_XXS")
    assert {e["name"]: e["type"] for e in ev if e["event"] == "tensor"} == {t.name: t.type for t in plan.tensors}
    assert ev[-2]["event"] == "verified" and ev[-2]["ok"] is True
    assert ev[-1] == {"event": "done", "exit_code": 0, "output": None}


def test_quantize_error_events(lc, tiny_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf("deepseek2-mla").read_bytes()[:120_000])
    out = tmp_path / "out.gguf"
    r = dq("quantize", "--input", cut, "--scheme", "Q4_K_M", "--output", out, "--events", "jsonl")
    assert r.returncode == 1
    ev = events_of(r.stdout)
    assert [e["event"] for e in ev] == ["started", "error", "done"]
    assert ev[1]["exit_code"] == 1 and "model is corrupted or incomplete" in ev[1]["message"]
    assert r.stderr.strip().splitlines()[-1] == f"dq-planner: {ev[1]['message']}"   # the same one line
    assert ev[2] == {"event": "done", "exit_code": 1, "output": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]

    # bad input: refused before anything starts, exit 2, as an event too (usage errors included)
    for args in (["--input", tmp_path / "missing.gguf", "--scheme", "Q4_K_M", "--output", out],
                 ["--input", cut, "--scheme", "Q4_K_M", "--output", out, "--no-such-flag"]):
        r = dq("quantize", *args, "--events", "jsonl")
        assert r.returncode == 2
        ev = events_of(r.stdout)
        assert [e["event"] for e in ev] == ["error", "done"] and ev[0]["exit_code"] == ev[1]["exit_code"] == 2
        assert r.stderr.strip() == f"dq-planner: {ev[0]['message']}"


def test_verification_difference_events(lc, tiny_gguf, tmp_path, monkeypatch, capsys):
    import planner.core.llamacpp.sizing as sizing
    from planner.cli import main

    real = sizing.size_scheme

    def wrong(model, scheme, imatrix=None):
        sp = real(model, scheme, imatrix)
        next(t for t in sp.tensors if t.name == "blk.0.ffn_down.weight").type = "q8_0"
        return sp

    monkeypatch.setattr(sizing, "size_scheme", wrong)
    out = tmp_path / "out.gguf"
    rc = main(["quantize", "--input", str(tiny_gguf("llama")), "--scheme", "Q4_K_M", "--output", str(out),
               "--events", "jsonl"])
    assert rc == 1
    ev = events_of(capsys.readouterr().out)
    v = next(e for e in ev if e["event"] == "verified")
    assert (v["ok"], v["tensors"], v["differences"]) == (False, 40, 2)   # llama-quantize's line and the header
    assert {"name": "blk.0.ffn_down.weight", "what": "type", "planned": "q8_0", "actual": "q4_K"} in v["mismatches"]
    assert [e["event"] for e in ev[-2:]] == ["error", "done"] and ev[-2]["exit_code"] == 1
    assert ev[-1] == {"event": "done", "exit_code": 1, "output": str(out)}     # the file is kept


# ---------------------------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------------------------

def serve_plan_of(lc, args: list[str]):
    """The plan `dq-planner serve ARGS` makes (the same request, the same devices)."""
    from planner.cli import request_from_args
    from planner.commands import serve
    from planner.engines.llamacpp.argv import parse_rpc_list
    from planner.engines.llamacpp.serve_placement import plan_serve

    a = serve.parser().parse_args(args)
    req = request_from_args(a)
    return plan_serve(lc, req, parse_rpc_list(req.rpc), host=a.host, port=a.port)


def check_measured(ev: dict, sp) -> dict:
    rows = {(r["device"], r["component"]): r for r in ev["rows"]}
    planned = {d.device: d for d in sp.memory.per_device if d.weights_bytes or d.kv_bytes}
    if sp.memory.host is not None:
        planned["Host"] = sp.memory.host
    for dev, d in planned.items():
        w = rows[(dev, "weights")]
        assert w["planned_bytes"] in (d.weights_bytes, sp.host_mapped_bytes if dev == "Host" else None)
        assert w["exact"] and f"{w['planned_bytes'] / MIB:.2f}" == f"{w['measured_mib']:.2f}", w
        if d.kv_bytes:
            kv = rows[(dev, "kv")]
            assert kv["planned_bytes"] == d.kv_bytes and kv["exact"], kv
            assert f"{d.kv_bytes / MIB:.2f}" == f"{kv['measured_mib']:.2f}"
    return rows


@pytest.fixture()
def model(tiny_gguf, tmp_path):
    p = tmp_path / "tiny ds.gguf"
    shutil.copy(tiny_gguf("deepseek2-mla"), p)
    return p


def test_serve_events_cpu(lc, model):
    port = free_port()
    args = ["--model-file", str(model), "--ctx", "4096", "--port", str(port)]
    r = dq("serve", *args, "--events", "jsonl", "--speed-requests", "0", timeout=300)
    assert r.returncode == 0, r.stderr
    ev = events_of(r.stdout)
    assert [e["event"] for e in ev] == ["started", "ready", "measured", "measured", "done"]
    assert ev[0]["program"] == "llama-server" and ev[0]["argv"][ev[0]["argv"].index("-c") + 1] == "4096"
    assert ev[1] == {"event": "ready", "url": f"http://127.0.0.1:{port}", "pid": ev[0]["pid"]}
    assert [e["phase"] for e in ev[2:4]] == ["ready", "stopped"]
    sp = serve_plan_of(lc, args)
    for m in ev[2:4]:
        rows = check_measured(m, sp)
        assert rows[("Host", "kv")]["planned_bytes"] == sp.memory.host.kv_bytes > 0
        assert rows[("Host", "compute")]["planned_bytes"] == sp.memory.host.compute_bytes
    assert ev[-1] == {"event": "done", "exit_code": 0, "output": None}
    assert processes_using(model) == []


def test_serve_events_over_two_rpc_servers(lc, model, rpc_servers):
    a, b = rpc_servers
    args = ["--model-file", str(model), "--ctx", "4096", "--port", str(free_port()), "--rpc", f"{a}=1G,{b}=1G"]
    r = dq("serve", *args, "--events", "jsonl", timeout=300)
    assert r.returncode == 0, r.stderr
    ev = events_of(r.stdout)
    sp = serve_plan_of(lc, args)
    m = [e for e in ev if e["event"] == "measured"][-1]
    rows = check_measured(m, sp)
    for dev in (f"RPC[{a}]", f"RPC[{b}]"):
        d = next(x for x in sp.memory.per_device if x.device == dev)
        assert rows[(dev, "weights")]["planned_bytes"] == d.weights_bytes > 0
        assert rows[(dev, "kv")]["planned_bytes"] == d.kv_bytes > 0
    assert ("Host", "kv") not in rows                        # every layer is on the RPC devices
    assert processes_using(model) == []


def test_serve_failure_event(lc, model):
    port = free_port()                        # nothing listens there
    r = dq("serve", "--model-file", model, "--ctx", "4096", "--rpc", f"127.0.0.1:{port}", "--events", "jsonl",
           timeout=120)
    assert r.returncode == 1
    ev = events_of(r.stdout)
    assert [e["event"] for e in ev] == ["error", "done"]
    assert ev[0]["exit_code"] == 1 and f"Failed to connect to 127.0.0.1:{port}" in ev[0]["message"]


@pytest.fixture()
def rpc_servers(lc):
    with start_rpc_servers(lc, 2) as addrs:
        yield addrs


# ---------------------------------------------------------------------------------------------------
# the TUI's job runner on captured output (stdout and stderr on one pipe, as the TUI reads them)
# ---------------------------------------------------------------------------------------------------

def test_quantize_state_from_captured_events(tiny_gguf):
    from planner.tui.jobs import QuantizeState

    st = QuantizeState()
    lines = (FIX / "quantize_q4_k_m_events.txt").read_text().splitlines()
    fractions, log = [], []
    for line in lines:
        if not st.feed_line(line):
            log.append(line)
        elif parse_event(line)["event"] == "progress":
            fractions.append(st.fraction)
    plan = plan_of(tiny_gguf("deepseek2-mla"), "Q4_K_M")
    assert st.program == "llama-quantize" and st.tensors == st.tensor == len(plan.tensors) == 52
    assert len(fractions) == 52 and all(b > a for a, b in zip(fractions, fractions[1:]))
    src = {t.name: t.bytes for t in read_header(tiny_gguf("deepseek2-mla")).tensors}
    assert fractions[0] == src["output.weight"] / sum(src.values())     # llama-quantize's first tensor
    assert st.fraction == 1.0 and st.eta_s == 0.0 and st.name == "blk.2.ffn_up_shexp.weight"
    assert st.written == {t.name: (t.type, t.bytes) for t in plan.tensors}
    assert (st.verified, st.differences, st.exit_code, st.output) == (True, 0, 0, "out.gguf")
    assert len(log) == 2 and not any(parse_event(l) for l in log)       # the human lines stay the log


def test_serve_state_from_captured_events(tiny_gguf):
    from planner.tui.jobs import ServeState

    st = ServeState()
    seen = []
    for line in (FIX / "serve_keep_running_events.txt").read_text().splitlines():
        if st.feed_line(line):
            seen.append((st.url, st.phase, len(st.rows)))
    assert seen[1] == ("http://127.0.0.1:18080", None, 0)               # ready, nothing measured yet
    assert seen[2] == ("http://127.0.0.1:18080", "ready", 4)
    assert st.phase == "stopped" and st.exit_code == 0 and st.error is None
    rows = {(r.device, r.what): r for r in st.rows}
    kv = rows[("Host", "KV cache")]
    assert (kv.planned_bytes, kv.planned_mib, kv.measured_mib, kv.diff) == (3 * 4096 * 320 * 2, 7.5, 7.5, "exact")
    w = rows[("Host", "weights")]
    # the served file is the Q4_K_M quantization of the tiny model, all of it on the host; 3.17 MiB is
    # llama.cpp's figure (CPU_Mapped + CPU_REPACK)
    size = plan_of(tiny_gguf("deepseek2-mla"), "Q4_K_M").size_bytes
    assert (w.planned_bytes, w.planned_mib, w.measured_mib) == (size, round(size / MIB, 2), 3.17)
    assert w.diff == f"{size / MIB - 3.17:+.2f} ({100 * (size / MIB - 3.17) / 3.17:+.1f}%)" == "-1.06 (-33.6%)"
    assert [r.what for r in st.rows] == ["weights", "KV cache", "compute", "output buffer"]


def _run_panels(body):
    from textual.app import App

    from planner.tui.widgets.jobs import RunView

    class Jobs(App):
        child_processes: list = []

        def compose(self):
            yield RunView()

    async def main():
        app = Jobs()
        async with app.run_test(size=(120, 40)) as pilot:
            await body(app, pilot)

    asyncio.run(main())


def test_panels_show_the_events_of_a_child():
    """The panels run a child (here one that prints captured output) and show what its events say."""
    from textual.widgets import DataTable, ProgressBar

    def cat(name: str) -> list[str]:
        return [sys.executable, "-c", f"import sys; sys.stdout.write(open({str(FIX / name)!r}).read())"]

    async def body(app, pilot):
        q = app.query_one("#quantize-panel")
        q.begin("out.gguf")
        rc = await q.run_child(cat("quantize_q4_k_m_events.txt"))
        q.finish(rc)
        await pilot.pause()
        assert rc == 0 and q.fraction == 1.0 and q.state.verified is True
        assert q.query_one("#quantize-progress", ProgressBar).progress == 100
        assert q.last_status.startswith("done: out.gguf")
        assert len(q.log_widget.lines) == 3                 # the command line and the two human lines

        s = app.query_one("#serve-panel")
        s.begin()
        rc = await s.run_child(cat("serve_keep_running_events.txt"))
        s.finish(rc)
        await pilot.pause()
        assert s.url == "http://127.0.0.1:18080" and s.state.phase == "stopped"
        t = s.query_one("#serve-compare", DataTable)
        assert t.row_count == 4
        assert [str(c) for c in t.get_row_at(1)] == ["Host", "KV cache", "7.50", "7.50", "exact"]

    _run_panels(body)


def test_job_runner_passes_events_jsonl_to_dq_planner():
    from planner.tui.jobs import dq_planner_argv, events_argv

    assert events_argv(["quantize", "--input", "a"]) == ["quantize", "--events", "jsonl", "--input", "a"]
    assert events_argv(["serve", "--events", "jsonl"]) == ["serve", "--events", "jsonl"]
    assert dq_planner_argv(["serve"])[:3] == [sys.executable, "-m", "planner.cli"]
