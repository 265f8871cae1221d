"""The TUI driven with Textual's Pilot: choices re-plan at once and every figure shown is make_plan's."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from planner.core.plan import PlanRequest
from planner.errors import PlannerError
from planner.make_plan import make_plan
from planner.units import GiB, human
from planner.tui.app import ACTIONS, PlannerApp
from llamacpp_support import dq, require_llama_cpp

from tui_support import R1_910B_LEGACY, run


async def choose(app, pilot, key: str, text: str) -> None:
    """Open a choice with its key, type to search, Enter: what a user does."""
    await pilot.press(key)
    await pilot.pause()
    await pilot.press(*text, "enter")
    await pilot.pause()


def bar_figures(sp) -> list[str]:
    return [f"{d.total_bytes / GiB:.1f}/{d.capacity_bytes / GiB:.1f} GiB" for d in sp.memory.per_device]


def test_pick_device_kv_mode_and_scheme_with_keys_then_see_it_stop_fitting():
    async def body(app, pilot):
        await choose(app, pilot, "d", "910b")
        await choose(app, pilot, "k", "legacy")
        await choose(app, pilot, "s", "DQ3")
        assert (app.request.device, app.request.kv_mode, app.sp.id) == ("910b", "legacy", "DQ3_K_M")
        want = make_plan(PlanRequest(device="910b", kv_mode="legacy", schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
        text = app.screen_text()
        assert f"DQ3_K_M (recipe): {human(want.size_bytes)}" in text
        assert f"{want.bpw:.2f} bits/weight" in text
        assert want.fits is True
        assert f"Fits     yes: {human(want.headroom_bytes)} free" in text
        for fig in bar_figures(want):
            assert fig in text
        assert "OVER" not in text

        await choose(app, pilot, "s", "Q4_K_M")
        want = make_plan(PlanRequest(device="910b", kv_mode="legacy", schemes=["Q4_K_M"])).scheme("Q4_K_M")
        text = app.screen_text()
        assert want.fits is False
        assert f"Q4_K_M (ftype): {human(want.size_bytes)}" in text
        assert f"NO: over by {human(-want.headroom_bytes)}" in text
        for fig in bar_figures(want):
            assert fig in text
        assert text.count(" OVER") == sum(d.headroom_bytes < 0 for d in want.memory.per_device)

    run(PlanRequest(device="h100"), body)


def test_every_scheme_side_by_side_and_stepping_through_them():
    async def body(app, pilot):
        full = make_plan(R1_910B_LEGACY)
        assert [s.id for s in app.full_plan.schemes] == [s.id for s in full.schemes]
        await pilot.press("2")
        await pilot.pause()
        text = app.screen_text()
        for s in full.schemes[:5]:
            assert f"{s.size_bytes / GiB:.2f}" in text
        # ] and [ step through the schemes in the plan's order
        ids = [s.id for s in full.schemes]
        i = ids.index(app.scheme_id)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.scheme_id == ids[i + 1]
        assert app.sp.size_bytes == full.scheme(ids[i + 1]).size_bytes
        await pilot.press("left_square_bracket", "left_square_bracket")
        await pilot.pause()
        assert app.scheme_id == ids[i - 1]
        # Enter on a row of the table selects that scheme
        table = app.query_one("#scheme-table")
        table.focus()
        table.move_cursor(row=ids.index("IQ2_XXS"))
        await pilot.press("enter")
        await pilot.pause()
        assert app.sp.id == "IQ2_XXS"
        assert app.sp.size_bytes == full.scheme("IQ2_XXS").size_bytes

    run(R1_910B_LEGACY, body)


def test_model_change_typed_numbers_and_bad_values():
    async def body(app, pilot):
        assert app.sp.id == "DQ3_K_M"
        await choose(app, pilot, "m", "deepseek-r1-distill-qwen-32b")
        # DQ3_K_M is a deepseek2 recipe: the app falls back to Q4_K_M instead of failing
        assert app.plan.model.id == "deepseek-r1-distill-qwen-32b"
        assert app.sp.id == "Q4_K_M"
        assert app.error is None
        assert app.query_one("#ch-kv_mode").disabled        # no KV mode outside deepseek2
        model = dict(model="deepseek-r1-distill-qwen-32b", device="a100")
        want = make_plan(PlanRequest(**model, schemes=["Q4_K_M"])).scheme("Q4_K_M")
        assert app.sp.size_bytes == want.size_bytes
        assert f"Q4_K_M (ftype): {human(want.size_bytes)}" in app.screen_text()

        await pilot.press("c")
        assert app.focused is app.query_one("#ch-ctx")
        await pilot.press(*["backspace"] * 5, *"8192", "enter")
        await pilot.pause()
        want = make_plan(PlanRequest(**model, ctx=8192, schemes=["Q4_K_M"])).scheme("Q4_K_M")
        assert app.plan.context == 8192
        assert app.sp.memory.kv_cache_bytes == want.memory.kv_cache_bytes
        assert f"KV cache {human(want.memory.kv_cache_bytes)}" in app.screen_text()

        await pilot.press("g")            # a letter in a number field is the app's key: to the GPU count
        assert app.focused is app.query_one("#ch-gpus")
        await pilot.press("0", "enter")
        await pilot.pause()
        # 0 GPUs without --rpc devices: the core refuses it, the screen says why
        with pytest.raises(PlannerError) as refused:
            make_plan(PlanRequest(**model, ctx=8192, gpus=0, schemes=["Q4_K_M"]))
        assert app.error == str(refused.value)
        assert f"! {refused.value}"[:60] in app.screen_text()
        assert app.focused is app.query_one("#ch-gpus")     # the refused value stays to be mended
        await pilot.press("backspace", "2", "enter")
        await pilot.pause()
        assert app.error is None
        assert app.plan.hardware.gpus == 2 and len(app.sp.memory.per_device) == 2
        want = make_plan(PlanRequest(**model, ctx=8192, gpus=2, schemes=["Q4_K_M"])).scheme("Q4_K_M")
        assert [d.total_bytes for d in app.sp.memory.per_device] == [d.total_bytes for d in want.memory.per_device]
        await pilot.press("escape")
        assert app.focused is not app.query_one("#ch-gpus")

    run(PlanRequest(device="a100", schemes=["DQ3_K_M"]), body, settle=False)


def test_tensor_table_then_export_plan_json_and_launch_commands(tmp_path):
    out = tmp_path / "plan.json"
    script = tmp_path / "launch.sh"
    req = PlanRequest(device="910b", kv_mode="legacy", schemes=["DQ3_K_M"])

    async def body(app, pilot):
        await pilot.press("f")
        await pilot.press(*"ffn_down_exps q4_K")
        await pilot.pause()
        view = app.query_one("#tensor-view")
        # the tensors are make_plan's for the selected scheme
        tensors = make_plan(req).scheme("DQ3_K_M").tensors
        want = [t for t in tensors if "ffn_down_exps" in t.name and t.type == "q4_K"]
        assert len(view.shown) == len(want) == 12
        assert [t.bytes for t in view.shown] == sorted((t.bytes for t in want), reverse=True)
        assert f"12/{len(tensors)} tensors, {human(sum(t.bytes for t in want))}" in app.screen_text()
        await pilot.press("enter", "o")            # to the table, then sort by the next column (name)
        await pilot.pause()
        assert view.sort_column == "name"
        assert [t.name for t in view.shown][:3] == ["blk.8.ffn_down_exps.weight", "blk.12.ffn_down_exps.weight",
                                                    "blk.16.ffn_down_exps.weight"]
        assert app.query_one("#type-table").row_count == len(app.sp.type_bytes)

        await pilot.press("x")
        await pilot.pause()
        app.screen.query_one("#field-path").value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        assert "dq-planner quantize --input DeepSeek-R1-BF16.gguf --scheme DQ3_K_M" in app.screen_text()
        app.screen.query_one("#field-path").value = str(script)
        await pilot.press("enter")
        await pilot.pause()
        # exporting again to the same file is refused and leaves it as it was
        before = out.read_text()
        await pilot.press("x")
        await pilot.pause()
        app.screen.query_one("#field-path").value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        assert out.read_text() == before

    run(req, body)
    # the export is the plan of every scheme for these choices, as `dq-planner --headless --json` gives it
    from planner.render.json_doc import plan_document

    assert json.loads(out.read_text()) == plan_document(make_plan(replace(req, schemes=None)))
    # the launch commands are the engine's own for this plan (what --print-commands prints)
    from planner.engines.llamacpp.commands import launch_lines

    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert text == "#!/bin/sh\nset -eu\n" + "\n".join(launch_lines(make_plan(req), req, "DQ3_K_M")) + "\n"
    assert "llama-server -m DeepSeek-R1-DQ3_K_M.gguf" in text


def _export(req: PlanRequest, tmp_path: Path, keys: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """Open the app on `req`, press `keys`, export the plan with x: (the JSON, the request's CLI options)."""
    out = tmp_path / "tui.json"
    got: list[str] = []

    async def body(app, pilot):
        if keys:
            await pilot.press(*keys)
            await app.settle()
            await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        app.screen.query_one("#field-path").value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        got.extend(app.wb.cli_args())

    run(req, body)
    return json.loads(out.read_text()), got


@pytest.mark.parametrize("keys", [(), ("right_square_bracket",)], ids=["file", "file-and-next-scheme"])
def test_exported_json_of_a_gguf_file_is_the_cli_json_of_the_same_request(tiny_gguf, tmp_path, monkeypatch, keys):
    monkeypatch.setenv("DQ_PLANNER_DETECT", "0")
    path = str(tiny_gguf("deepseek2-mla"))
    doc, args = _export(PlanRequest(model_file=path, device="h100"), tmp_path, keys)
    r = dq("--headless", "--json", *args, env={**os.environ, "DQ_PLANNER_DETECT": "0"})
    assert r.returncode == 0, r.stderr
    assert doc == json.loads(r.stdout)
    kinds = [s["id"] for s in doc["schemes"]]
    # the file as it is, then (after ]) the scheme selected: the CLI's --model-file F [--scheme S]
    assert len(kinds) == 1 + len(keys)
    if keys:
        assert args[args.index("--scheme") + 1] == kinds[1]


def test_exported_json_of_a_catalog_model_is_the_cli_json_of_the_same_request(tmp_path):
    req = PlanRequest(model="deepseek-r1-distill-qwen-32b", device="a100", gpus=2, ctx=8192, schemes=["Q4_K_M"])
    doc, args = _export(req, tmp_path)
    r = dq("--headless", "--json", *args, env={**os.environ, "DQ_PLANNER_DETECT": "0"})
    assert r.returncode == 0, r.stderr
    assert doc == json.loads(r.stdout)
    # the TUI compares every scheme of the model: the request without --scheme
    assert "--scheme" not in args and len(doc["schemes"]) > 1


def test_every_action_has_a_key_and_a_palette_entry():
    async def body(app, pilot):
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        keys = {b.key for b in app.BINDINGS}
        for key, action, _, title, _ in ACTIONS:
            assert key in keys
            assert title in commands
        assert "ctrl+q" in keys
        # a palette entry runs the action: "Show the tensor table" switches the tab
        await commands["Show the tensor table and the bytes per type"].callback()
        await pilot.pause()
        assert app.query_one("#tabs").active == "tensors"

    run(PlanRequest(device="h100"), body, size=(80, 24))


def test_no_color_is_respected(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def body(app, pilot):
        assert app.no_color
        svg = app.export_screenshot()
        # monochrome: no saturated colour survives anywhere on the screen
        import re

        colours = set(re.findall(r"fill: #([0-9a-f]{6})", svg))
        for c in colours:
            r, g, b = int(c[:2], 16), int(c[2:4], 16), int(c[4:], 16)
            assert max(r, g, b) - min(r, g, b) <= 8, c

    run(R1_910B_LEGACY, body, size=(80, 24))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_quantize_and_serve_a_tiny_model_then_quit_stops_the_server(tmp_path):
    require_llama_cpp("llama-quantize", "llama-server")       # fails under CI when they are missing
    from planner.gguf.writer import write_gguf
    from tiny_models import tiny_model

    src = tmp_path / "tiny BF16.gguf"
    write_gguf(src, tiny_model("deepseek2-mla"))
    out = tmp_path / "tiny Q4_K_M.gguf"
    pids = {}

    async def body(app, pilot):
        app.start_quantize(str(src), str(out))
        for w in [w for w in app.workers if w.name == "quantize"]:
            await w.wait()
        await pilot.pause()
        q = app.query_one("#quantize-panel")
        assert q.last_status.startswith("done:"), q.last_status
        assert q.fraction == 1.0
        assert out.is_file()
        port = _free_port()
        app.start_serve(str(out), str(port))
        s = app.query_one("#serve-panel")
        for _ in range(600):                  # wait until the model is loaded and served
            await pilot.pause(0.05)
            if s.url:
                break
        assert s.url == f"http://127.0.0.1:{port}"
        first = s.child
        await pilot.press("K")                # stop: dq-planner serve prints planned vs measured at the stop
        for w in [w for w in app.workers if w.name == "serve"]:
            await w.wait()
        await pilot.pause()
        assert s.last_status.startswith("stopped"), s.last_status
        assert first.proc.returncode is not None
        rows = {(r.device, r.what): r for r in s.rows}
        kv = rows[("Host", "KV cache")]
        assert kv.diff == "exact" and kv.planned_mib == kv.measured_mib > 0, s.rows
        assert "Host      KV cache" in app.screen_text() or "KV cache" in app.screen_text()
        # a server still loading when the app quits is stopped with it
        app.start_serve(str(out), str(_free_port()))
        for _ in range(100):
            await pilot.pause(0.02)
            if s.child is not first and s.child.proc is not None:
                break
        pids["serve"] = s.child.proc.pid
        await app.action_quit()

    run(PlanRequest(device="h100", ctx=4096), body)
    pid = pids["serve"]
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_gguf_file_as_the_model_then_another_engine(tiny_gguf):
    path = str(tiny_gguf("deepseek2-mla"))

    async def body(app, pilot):
        app.query_one("#ch-path").focus()
        await pilot.press(*path, "enter")
        await pilot.pause()
        want = make_plan(PlanRequest(device="h100", model_file=path))
        file_plan = next(s for s in want.schemes if s.kind == "file")
        assert app.sp.kind == "file" and app.sp.size_bytes == file_plan.size_bytes
        assert f"{human(file_plan.size_bytes)}" in app.screen_text()
        await app.settle()
        await pilot.pause()
        # the file against every scheme of its architecture: what re-quantizing its source would give
        ids = [v for _, v in app.scheme_choices]
        assert ids[0] == "file:" and "Q4_K_M" in ids and "DQ3_K_M" in ids
        await pilot.press("escape", "right_square_bracket")
        await pilot.pause()
        assert app.sp.id == ids[1] and app.sp.kind != "file"

        await choose(app, pilot, "m", "deepseek-r1-distill-qwen-32b")
        await choose(app, pilot, "e", "vllm")
        # vLLM serves Hugging Face formats: the scheme list is the model's formats
        from planner.core import catalog as cat
        from planner.core.serving.hf_checkpoint import formats_for

        fmts = [f.id for f in formats_for(cat.resolve_model("deepseek-r1-distill-qwen-32b"))]
        assert [v for _, v in app.scheme_choices] == fmts
        assert app.sp.id in fmts and app.error is None
        want = make_plan(PlanRequest(model="deepseek-r1-distill-qwen-32b", device="h100", engine="vllm",
                                     schemes=[app.sp.id])).scheme(app.sp.id)
        assert app.sp.size_bytes == want.size_bytes
        assert "vllm serve" in app.launch_text()

    run(PlanRequest(device="h100"), body, settle=False)


def test_cancel_a_running_quantization(tmp_path):
    require_llama_cpp("llama-quantize")
    from planner.gguf.writer import model_from_hparams, write_gguf
    from tiny_models import tiny_deepseek2_hparams

    # IQ3_S on 8 tiny deepseek2 blocks: a few seconds of llama-quantize, long enough to cancel midway
    src = tmp_path / "src.gguf"
    write_gguf(src, model_from_hparams(tiny_deepseek2_hparams(n_layer=8), "mla"))
    out = tmp_path / "out.gguf"

    async def body(app, pilot):
        app.set_select("ch-scheme", "IQ3_S")
        await pilot.pause()
        app.start_quantize(str(src), str(out))
        q = app.query_one("#quantize-panel")
        for _ in range(600):
            await pilot.pause(0.02)
            if 0 < q.fraction < 0.5:
                break
        assert 0 < q.fraction < 0.5, q.fraction
        assert "K" in app.screen.active_bindings            # the footer offers the stop key while it runs
        await pilot.press("K")
        for w in [w for w in app.workers if w.name == "quantize"]:
            await w.wait()
        await pilot.pause()
        assert q.last_status.startswith("cancelled"), q.last_status
        assert not q.child.running
        assert "K" not in app.screen.active_bindings

    run(PlanRequest(device="h100", schemes=["Q4_K_M"]), body, settle=False)
    # dq-planner quantize removed its partial output: the folder holds the source alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.gguf"]


def test_every_model_compared_without_blocking_the_screen():
    req = PlanRequest(model="auto", device="a100", gpus=1)

    async def body(app, pilot):
        # the comparison of every model runs only in the planning process
        assert app.plan is None and "Comparing every model" in app.screen_text()
        await app.settle()
        await pilot.pause()
        want = make_plan(req)
        assert app.plan.model.id == want.model.id == "deepseek-r1-distill-qwen-32b"
        assert app.sp.id == want.recommendation.scheme
        assert f"Recommended: {want.recommendation.model} {want.recommendation.scheme}" in app.screen_text()

    run(req, body, settle=False)


def test_a_list_opens_over_the_screen_and_choosing_from_it_lays_nothing_out():
    """d opens the device list on a screen of its own; Enter on another profile re-plans, closes it,
    and the app's screen is repainted, not laid out again (its footer keys are one line: clicking one
    presses it)."""
    from textual.screen import Screen

    from planner.tui.widgets.choices import ChoiceList

    async def body(app, pilot):
        base = app.screen
        footer = base.query_one("KeyFooter")
        text = str(footer.render())
        x = text.index(" d ") + 1
        await pilot.click(footer, offset=(x, 0))          # the footer's "d Device"
        await pilot.pause()
        assert isinstance(app.screen, ChoiceList) and app.screen.choice.id == "ch-device"
        layouts = []
        orig = Screen._refresh_layout

        def counted(self, *a, **k):
            layouts.append(self)
            return orig(self, *a, **k)

        Screen._refresh_layout = counted
        try:
            await pilot.press(*"h200", "enter")
            await pilot.pause()
            await asyncio.sleep(0.3)
        finally:
            Screen._refresh_layout = orig
        assert app.screen is base and app.request.device == "h200"
        assert base not in layouts
        want = make_plan(replace(R1_910B_LEGACY, device="h200", schemes=["DQ3_K_M"])).scheme("DQ3_K_M")
        assert f"{want.bpw:.2f} bits/weight" in app.screen_text()
        assert f"{want.memory.per_device[0].capacity_bytes / GiB:.1f} GiB" in app.screen_text()

    async def main():
        # every scheme planned only when asked: the plan of the chosen scheme is what the keypress shows
        app = PlannerApp(replace(R1_910B_LEGACY, schemes=["DQ3_K_M"]), full_plan_delay=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            await app.settle()
            await pilot.pause()
            await body(app, pilot)

    asyncio.run(main())


def test_the_plots_tab_draws_decode_speed_against_depth_from_the_plan():
    """The Plots tab's speed plot is the selected scheme's predicted decode curve (core.speed.decode_curve)."""
    from planner.core.llamacpp.speed import decode_curve
    from planner.tui.widgets.speed_plot import speed_points

    req = PlanRequest(device="h100", schemes=["DQ3_K_M"])

    async def body(app, pilot):
        await pilot.press("5")
        await pilot.pause()
        want = make_plan(req).scheme("DQ3_K_M")
        pts = speed_points(app.sp, app.plan.context)
        assert pts == decode_curve(want.speed, app.plan.context, 17)
        assert pts[0] == (0, want.speed.decode_tps) and pts[-1][0] == app.plan.context
        assert pts[-1][1] < pts[0][1]                  # the cache read grows with the depth
        assert f"{want.speed.decode_tps:.1f} at 0" in app.screen_text()

    run(req, body)
