"""The workbench as a user drives it (Textual's Pilot): typed values planned only when complete, the host
controls of hybrid deployments, each engine's own controls, predicted speeds on the Plan and Schemes
tabs, what 80x24 keeps in view, and one answer with the command line (the launch command of a hybrid
plan is its --print-commands)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from textual import events

from planner.core.plan import PlanRequest
from planner.errors import PlannerError
from planner.make_plan import make_plan
from planner.render.table import render_plan, speed_text
from planner.tui.app import ACTIONS
from planner.units import human
from llamacpp_support import dq

from tui_support import R1_910B_LEGACY, run

R1_4090 = PlanRequest(device="rtx4090", gpus=1)
ENV = {**os.environ, "DQ_PLANNER_DETECT": "0"}


def record_planned(app) -> list[PlanRequest]:
    """Every request the workbench plans from now on (the selected scheme's, here)."""
    seen: list[PlanRequest] = []
    plan_fn = app.wb.plan_fn

    def spy(req):
        seen.append(req)
        return plan_fn(req)

    app.wb.plan_fn = spy
    return seen


def plan_text(app) -> str:
    """The Plan tab's lines (all of them, scrolled or not), whitespace folded."""
    return " ".join(app.query_one("#plan-scroll").text().split())


async def burst(app, pilot, text: str) -> None:
    """Every key of `text` posted at once, as a terminal delivers a paste or fast typing."""
    for ch in text:
        app.post_message(events.Key("enter", "\r") if ch == "\r" else events.Key(ch, ch))
    await pilot.pause()


def test_a_burst_of_digits_in_the_context_field_plans_only_the_complete_value():
    async def body(app, pilot):
        planned = record_planned(app)
        ctx = app.query_one("#ch-ctx")
        await pilot.press("c")
        assert app.focused is ctx
        await pilot.press(*["backspace"] * 5)
        await burst(app, pilot, "65536")
        assert ctx.value == "65536" and ctx.has_class("edited")
        # nothing planned while it is typed: the plan is still the one of 32768
        assert [r.ctx for r in planned] == [] and app.plan.context == 32768
        await pilot.press("enter")
        await pilot.pause()
        assert {r.ctx for r in planned} == {65536}
        want = make_plan(replace(R1_910B_LEGACY, ctx=65536, schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
        assert app.plan.context == 65536 and app.sp.memory.kv_cache_bytes == want.memory.kv_cache_bytes
        assert f"KV cache {human(want.memory.kv_cache_bytes)}" in app.screen_text()
        # Enter gave the keys back to the tab: a digit now switches tabs, it does not extend the value
        assert app.focused is app.query_one("#plan-scroll")
        await pilot.press("2")
        await pilot.pause()
        assert ctx.value == "65536" and app.query_one("#tabs").active == "schemes"
        await pilot.press("1")

        # leaving the field plans it too (Tab); Escape puts the planned value back and plans nothing
        await pilot.press("c", "end", "backspace", "0", "tab")     # (the field's text is selected on focus)
        await pilot.pause()
        assert app.plan.context == 65530 and app.focused is not ctx
        planned.clear()
        await pilot.press("c", "end", "9", "9")
        assert ctx.value == "6553099"
        await pilot.press("escape")
        await pilot.pause()
        assert ctx.value == "65530" and not ctx.has_class("edited") and planned == []
        assert app.plan.context == 65530 and app.focused is app.query_one("#plan-scroll")

        # a value the command line refuses: the error says why, the field keeps the keys, the plan stays
        await pilot.press("c", "0", "enter")                      # typing replaces the selected text
        await pilot.pause()
        assert app.error == "--ctx must be at least 1, got 0" and app.focused is ctx
        assert app.plan.context == 65530
        await pilot.press("escape")
        await pilot.pause()
        assert app.error is None and ctx.value == "65530"

    run(replace(R1_910B_LEGACY, schemes=["DQ3_K_M"]), body, settle=False)


def test_every_burst_of_a_typed_number_plans_the_whole_number():
    """Three bursts as in the report (32, 6553, 3276 were planned for 65536), and other fields alike."""
    async def body(app, pilot):
        planned = record_planned(app)
        for field, key, text in (("ctx", "c", "65536"), ("ctx", "c", "131072"), ("gpus", "g", "4"),
                                 ("ctx", "c", "65536")):
            await pilot.press(key)
            w = app.query_one(f"#ch-{field}")
            await pilot.press(*["backspace"] * len(w.value))
            await burst(app, pilot, text + "\r")
            await pilot.pause()
            assert str(getattr(app.request, field)) == text
        assert sorted({r.ctx for r in planned}) == [65536, 131072]
        assert {r.gpus for r in planned} <= {None, 4}

    run(replace(R1_910B_LEGACY, schemes=["DQ3_K_M"]), body, settle=False)


def test_host_ram_and_bandwidth_plan_the_hybrid_deployment_and_cpu_moe_takes_auto():
    async def body(app, pilot):
        assert app.request.host_ram is None
        app.query_one("#ch-host_ram").focus()
        await pilot.press(*"768", "enter")
        app.query_one("#ch-host_bandwidth").focus()
        await pilot.press(*"460.8", "enter")
        await app.settle()
        await pilot.pause()
        assert (app.request.host_ram, app.request.host_bandwidth) == (768.0, 460.8)
        want = make_plan(replace(R1_4090, host_ram=768, host_bandwidth=460.8))
        rec = want.recommendation
        assert app.wb.recommendation().scheme == rec.scheme
        await pilot.press("a")
        await pilot.pause()
        sp = want.scheme(rec.scheme)
        assert sp.n_cpu_moe and app.sp.n_cpu_moe == sp.n_cpu_moe
        assert app.sp.speed.decode_tps == sp.speed.decode_tps
        assert " ".join(speed_text(sp).split()) in plan_text(app)

        # cpu moe: the letters of auto are typed into the field, not taken as the app's keys (a, u, ...)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        scheme, tab = app.scheme_id, app.query_one("#tabs").active
        field = app.query_one("#ch-n_cpu_moe")
        field.focus()
        await pilot.press("backspace", *"auto")
        assert field.value == "auto"
        assert app.scheme_id == scheme and app.query_one("#tabs").active == tab and len(app.screen_stack) == 1
        await pilot.press("enter")
        await pilot.pause()
        assert app.request.n_cpu_moe == "auto" and app.error is None
        want_auto = make_plan(replace(R1_4090, host_ram=768, host_bandwidth=460.8, n_cpu_moe="auto",
                                      schemes=[scheme])).scheme(scheme)
        assert app.sp.n_cpu_moe == want_auto.n_cpu_moe
        # other letters still reach the app from a number field: s opens the scheme list
        field.focus()
        await pilot.press("s")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ChoiceList"

    run(R1_4090, body, settle=False)


def test_the_launch_command_of_a_hybrid_plan_is_the_cli_print_commands(tmp_path):
    """One plan, one answer: the workbench's launch commands for the recommended hybrid deployment are
    what `dq-planner --headless --print-commands` prints for the same request."""
    got: dict = {}

    async def body(app, pilot):
        app.query_one("#ch-host_ram").focus()
        await pilot.press(*"768", "enter")
        await app.settle()
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        got["shown"] = str(app.screen.query_one("#dialog-text").render())
        got["script"] = app.launch_text()
        got["args"] = app.wb.cli_args()
        got["n_cpu_moe"] = app.sp.n_cpu_moe

    run(R1_4090, body, settle=False)
    assert got["args"] == ["--device", "rtx4090", "--gpus", "1", "--host-ram", "768"]
    r = dq("--headless", "--json", *got["args"], "--print-commands", env=ENV)
    assert r.returncode == 0, r.stderr
    cli_lines = r.stderr.rstrip("\n").split("\n")
    assert got["script"] == "#!/bin/sh\nset -eu\n" + "\n".join(cli_lines) + "\n"
    assert got["n_cpu_moe"] and f"--n-cpu-moe {got['n_cpu_moe']}" in cli_lines[-1]
    server = next(line for line in cli_lines if line.startswith("llama-server"))
    assert server in " ".join(got["shown"].split("\n")) or server[:60] in got["shown"]
    assert json.loads(r.stdout)["recommendation"]["scheme"] in got["script"]


def test_each_engine_shows_the_controls_it_reads():
    from planner.engines.registry import engine

    llama_only = {"rpc", "kv_mode", "cache_type_v", "flash_attn", "ngl", "n_cpu_moe", "tensor_split",
                  "host_ram", "host_bandwidth"}

    async def body(app, pilot):
        panel = app.query_one("#choices")
        shown = set(panel.shown_controls())
        assert llama_only <= shown and not shown & {"gpu_memory_utilization", "mem_fraction_static", "dp_attention"}
        assert not app.query_one("#section-engine").display         # a section with no control of the engine
        for name, own in (("vllm", {"gpu_memory_utilization"}), ("sglang", {"mem_fraction_static", "dp_attention"})):
            app.set_select("ch-engine", name)
            await pilot.pause()
            shown = set(panel.shown_controls())
            assert own <= shown and not shown & llama_only, (name, shown)
            assert {"device", "gpus", "nodes", "ctx", "cache_type_k", "parallel", "head_address"} <= shown
            # every control shown is read by the engine or by every plan
            every = set().union(*(engine(n).own_options for n in ("llama.cpp", "vllm", "sglang")))
            assert all(d in engine(name).own_options or d not in every for d in shown)
            assert app.query_one("#section-engine").display
        # SGLang's own control reaches the plan: data-parallel attention, which the core refuses for a
        # qwen2 model (the error line is the command line's), then off again
        app.set_select("ch-dp_attention", "on")
        await pilot.pause()
        assert app.request.dp_attention is True
        with pytest.raises(PlannerError) as refused:
            make_plan(replace(app.request, schemes=[app.scheme_id]))
        assert app.error == str(refused.value)
        app.set_select("ch-dp_attention", "off")
        await pilot.pause()
        assert app.request.dp_attention is False and app.error is None
        app.set_select("ch-engine", "vllm")
        await pilot.pause()
        app.query_one("#ch-gpu_memory_utilization").focus()
        await pilot.press(*"0.8", "enter")
        await pilot.pause()
        assert app.request.gpu_memory_utilization == 0.8
        assert "--gpu-memory-utilization 0.8" in app.launch_text()
        # the K type list is the engine's: vLLM caches in 16 bits or FP8
        ktype = app.query_one("#ch-cache_type_k")
        assert [v for _, v in ktype._options] == list(engine("vllm").cache_types) and "fp8" in engine("vllm").cache_types
        app.set_select("ch-cache_type_k", "fp8")
        await pilot.pause()
        assert app.request.cache_type_k == "fp8" and "--kv-cache-dtype fp8" in app.launch_text()
        app.set_select("ch-cache_type_k", "f16")
        await pilot.pause()
        app.set_select("ch-engine", "llama.cpp")
        await pilot.pause()
        assert llama_only <= set(panel.shown_controls())
        assert [v for _, v in ktype._options] == list(engine("llama.cpp").cache_types)

    run(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="h100", gpus=2), body, settle=False)


def test_predicted_speeds_on_the_plan_and_schemes_tabs():
    req = PlanRequest(device="h100", schemes=["DQ3_K_M"])

    async def body(app, pilot):
        want = make_plan(replace(req, schemes=None))
        sp = want.scheme("DQ3_K_M")
        text = plan_text(app)
        assert " ".join(speed_text(sp).split()) in text
        assert f"{sp.speed.decode_tps_at(want.context):.1f} tok/s decode at depth {want.context}" in text
        await pilot.press("2")
        await pilot.pause()
        table = app.query_one("#scheme-table")
        headers = [str(c.label) for c in table.ordered_columns]
        assert headers[:7] == ["", "scheme", "GiB", "fits", "accuracy", "decode", "prefill"]
        for s in want.schemes[:5]:
            row = table.get_row(s.id)
            assert str(row[5]) == f"{s.speed.decode_tps:.1f}" and str(row[6]) == f"{s.speed.prefill_tps:.1f}"
        assert (f"decode at depth {sp.speed.depth_tokens}, prefill of {sp.speed.prompt_tokens} prompt tokens"
                in str(app.query_one("#schemes-note").render()))

    run(req, body)


def test_the_accuracy_column_and_proxy_note_are_the_cli_ones():
    """R1's BF16 row shows the score the recommendation quotes (as the command line's table), and
    V3.2's accuracy proxy note is shown as the command line prints it."""
    from planner.render.table import accuracy_column

    async def body(app, pilot):
        want = make_plan(PlanRequest(device="h100"))
        await pilot.press("2")
        await pilot.pause()
        table = app.query_one("#scheme-table")
        header, cells = accuracy_column(want)
        assert str(table.ordered_columns[4].label) == header
        assert [str(table.get_row(s.id)[4]) for s in want.schemes] == cells
        assert cells[[s.id for s in want.schemes].index("BF16")] != "unmeasured"

    run(PlanRequest(device="h100"), body)

    async def v32(app, pilot):
        want = make_plan(PlanRequest(model="deepseek-v3.2", device="h200"))
        note = next(line for line in render_plan(want).split("\n") if line.startswith("note: accuracy prox"))
        await pilot.press("3")
        await pilot.pause()
        shown = " ".join(str(app.query_one("#accuracy-note").render()).split())
        assert " ".join(note.split()) in shown
        await pilot.press("1")
        await pilot.pause()
        assert "Accuracy no measurement of DeepSeek-V3.2 (see the notes below)" in plan_text(app)
        assert " ".join(note.split()) in plan_text(app)

    run(PlanRequest(model="deepseek-v3.2", device="h200"), v32)


def test_80x24_keeps_what_decides_in_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def body(app, pilot):
        plan = make_plan(R1_910B_LEGACY)
        rec = plan.recommendation.scheme
        screen = app.screen_text()
        assert f"Recommended: {rec}" in screen            # the Plan tab, without scrolling
        await pilot.press("2")
        await pilot.pause()
        lines = app.screen_text().split("\n")
        assert any("fits" in ln and "accuracy" in ln for ln in lines)
        row = next(ln for ln in lines if f" {rec} " in ln.partition("▕")[2])     # the selected row is in view
        s = plan.scheme(rec)
        assert "yes" in row and f"{plan.recommendation.entry(rec).score:.2f}" in row, row
        await pilot.press("3")
        await pilot.pause()
        lines = app.screen_text().split("\n")
        assert any("weighted" in ln and "drop %" in ln for ln in lines)
        row = next(ln for ln in lines if f" {rec} " in ln.partition("▕")[2])
        assert f"{s.accuracy.weighted_avg:.2f}" in row and f"{s.accuracy.drop_pct:.2f}" in row

        # the footer's keys are whole, and ? lists every key
        footer = app.screen_text().split("\n")[-1]
        assert "? Keys" in footer and footer.rstrip().endswith(("Export", "Launch", "Quant", "Serve", "Device"))
        await pilot.press("question_mark")
        await pilot.pause()
        listed = " ".join(app.screen_text().split())
        for key, _, _, title, _ in ACTIONS[:12]:        # what 24 lines hold; the list scrolls for the rest
            assert title in listed, title
        await pilot.press("escape")
        await pilot.pause()

        # the model list: every id whole on its line
        await pilot.press("m")
        await pilot.pause()
        overlay = app.screen.query_one("SelectOverlay")
        longest = max(len(p) for p, _ in app.query_one("#ch-model")._options)
        assert overlay.region.width >= longest + 4
        screen = app.screen_text()
        assert "deepseek-r1-distill-llama-70b" in screen and "deepseek-r1-distill-qwen-14b" in screen
        await pilot.press("escape")
        await pilot.pause()

        # the export toast names the file by its absolute path
        await pilot.press("x")
        await pilot.pause()
        app.screen.query_one("#field-path").value = "plan.json"
        await pilot.press("enter")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any(m.endswith(str(tmp_path / "plan.json")) for m in messages), messages

    run(replace(R1_910B_LEGACY, schemes=["DQ3_K_M"]), body, size=(80, 24))
